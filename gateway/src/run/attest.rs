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
use crate::registry::{Admission, InstanceRecord};

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
    /// When the agent's RA-TLS certificate ends, seconds since the Unix epoch.
    pub valid_until: u64,
    /// The app policy.
    pub policy: Arc<PolicyFile<AppPolicy>>,
}

impl PeerAttestation for AgentClaims {
    fn authorize(&self, app_id: &AppId) -> Result<Admission, ErrorBody> {
        let policy = self.policy.current();
        match policy.check(app_id.as_str(), &self.claims) {
            Ok(_) => Ok(Admission {
                claims: Claims::clone(&self.claims),
                valid_until: self.valid_until,
            }),
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

/// Whether `policy` still admits a registered instance: `Err` names why not (its app left the policy, a check of its
/// stored claims fails, or it has no stored claims to check).
pub(crate) fn still_admitted(policy: &AppPolicy, record: &InstanceRecord) -> Result<(), String> {
    let Some(claims) = &record.claims else {
        return Err("no verified claims are stored for it".into());
    };
    policy
        .check(record.app_id.as_str(), claims)
        .map(|_| ())
        .map_err(|v| v.to_string())
}

/// Loads the app policy file.
pub(crate) fn load_policy(path: &Path) -> Result<Arc<PolicyFile<AppPolicy>>, RunError> {
    PolicyFile::load(path)
        .map(Arc::new)
        .map_err(RunError::Policy)
}
