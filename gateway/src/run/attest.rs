//! The gateway's attestation at run time: the app policy, the background refresh of fetched TDX collateral, and
//! the per-app check of an agent's claims.

use std::path::Path;
use std::sync::Arc;

use attestation::policy::PolicyFile;
use attestation::policy::{AppPolicy, PolicyViolation};
use attestation::tdx::CollateralSource;
use attestation::Claims;
use protocol::control::{AppId, ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;

use super::RunError;
use crate::control::PeerAttestation;

/// Fetches the TDX collateral that verification missed, and refreshes collateral nearing its expiry, every
/// `every`, until `stop` is cancelled.
pub(crate) async fn refresh_collateral(
    source: Arc<CollateralSource>,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        for (key, outcome) in source.refresh_all(std::time::SystemTime::now()).await {
            if outcome.is_ok() {
                tracing::info!(fmspc = %key.fmspc, ca = key.ca, "TDX collateral up to date");
            }
        }
    }
}

/// An agent's verified claims, checked against the (reloadable) app policy per request.
#[derive(Debug)]
pub struct AgentClaims {
    /// The verified claims of the agent's RA-TLS certificate.
    pub claims: Arc<Claims>,
    /// The app policy.
    pub policy: Arc<PolicyFile<AppPolicy>>,
}

impl PeerAttestation for AgentClaims {
    fn authorize(&self, app_id: &AppId) -> Result<String, ErrorBody> {
        let policy = self.policy.current();
        match policy.check(app_id.as_str(), &self.claims) {
            Ok(_) => Ok(self.claims.summary().to_string()),
            Err(PolicyViolation::UnknownApp(_)) => Err(ErrorBody::new(
                ErrorCode::AppUnknown,
                format!("app {app_id} is unknown to this gateway's policy; ask its operator to add the app"),
            )),
            Err(v) => Err(ErrorBody::new(
                ErrorCode::PolicyRefused,
                format!("attestation refused for app {app_id}: {v} (evidence: {})", self.claims.summary()),
            )),
        }
    }

    fn is_app_id(&self, id: &str) -> bool {
        self.policy.current().apps.contains_key(id)
    }
}

/// Loads the app policy file.
pub(crate) fn load_policy(path: &Path) -> Result<Arc<PolicyFile<AppPolicy>>, RunError> {
    PolicyFile::load(path)
        .map(Arc::new)
        .map_err(RunError::Policy)
}
