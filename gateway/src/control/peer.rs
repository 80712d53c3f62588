//! The other end of a control connection: its address and its verified attestation.

use std::net::SocketAddr;
use std::sync::Arc;

use attestation::owner::VerifiedPolicy;
use protocol::control::{AppId, ErrorBody};

use crate::registry::Admission;

/// The verified attestation of a connected agent, able to say whether it satisfies an app's policy.
pub trait PeerAttestation: Send + Sync + std::fmt::Debug {
    /// Checks the peer's claims against `app_id`'s policy: `owner`, the policy the app's owner signed (the highest
    /// version the gateway has seen, `None` when it has none), under which alone an instance may be admitted. On
    /// success returns what to store with the instance (the claims and when its evidence ends); on failure the
    /// typed error to answer with (`app_unknown`, `policy_refused`), naming the check that failed.
    fn authorize(
        &self,
        app_id: &AppId,
        owner: Option<&VerifiedPolicy>,
    ) -> Result<Admission, ErrorBody>;

    /// Whether `id` is an app id in the current policy (an instance id must not be one).
    fn is_app_id(&self, id: &str) -> bool;
}

/// What the HTTP handlers know about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ControlPeer {
    /// The peer's socket address.
    pub remote: SocketAddr,
    /// The peer's verified attestation, if it presented an RA-TLS certificate.
    pub attestation: Option<Arc<dyn PeerAttestation>>,
}
