//! The gateway's attestation at run time: the operator's apps file, the background refresh of fetched TDX
//! collateral, and the per-app check of an agent's claims under its app owner's signed policy.

use std::path::Path;
use std::sync::Arc;

use attestation::owner::VerifiedPolicy;
use attestation::policy::PolicyFile;
use attestation::tdx::CollateralSource;
use attestation::Claims;
use protocol::control::{AppId, ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;

use super::RunError;
use crate::control::operator::OperatorApps;
use crate::control::{ControlService, PeerAttestation};
use crate::proxy::app_policy::{PolicyAccepted, PolicyRejected};
use crate::registry::{Admission, InstanceRecord, PolicyOffer, PolicyOfferError};

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

/// An agent's verified claims, checked per request against its app owner's signed policy, after the (reloadable)
/// operator's apps file, which may deny the app.
#[derive(Debug)]
pub struct AgentClaims {
    /// The verified claims of the agent's RA-TLS certificate.
    pub claims: Arc<Claims>,
    /// When the agent's RA-TLS certificate ends, seconds since the Unix epoch.
    pub valid_until: u64,
    /// The operator's apps file.
    pub policy: Arc<PolicyFile<OperatorApps>>,
}

impl PeerAttestation for AgentClaims {
    fn authorize(
        &self,
        app_id: &AppId,
        owner: Option<&VerifiedPolicy>,
    ) -> Result<Admission, ErrorBody> {
        if self.policy.current().denies(app_id.as_str()) {
            return Err(ErrorBody::new(
                ErrorCode::PolicyRefused,
                format!("app {app_id} is denied by this gateway's operator (deny = true in its apps file)"),
            ));
        }
        let Some(owner) = owner else {
            return Err(ErrorBody::new(
                ErrorCode::AppUnknown,
                format!(
                    "app {app_id} has no policy signed by its owner at this gateway; configure the agent's                      app_policy (a file from `gateway app sign-policy`) or have the owner upload it                      (PUT /v1/apps/{app_id}/policy)"
                ),
            ));
        };
        match owner.check(&self.claims) {
            Ok(_) => Ok(Admission {
                claims: Claims::clone(&self.claims),
                valid_until: self.valid_until,
            }),
            Err(v) => Err(ErrorBody::new(
                ErrorCode::PolicyRefused,
                format!(
                    "attestation refused for {v} (evidence: {})",
                    self.claims.summary()
                ),
            )),
        }
    }

    fn is_app_id(&self, id: &str) -> bool {
        self.policy.current().apps.contains_key(id)
    }
}

/// Whether a registered instance is still admitted: its app is not denied by the operator's file `operator`, and
/// `owner` (its app owner's policy in force) admits its stored claims. `Err` names why not.
pub(crate) fn still_admitted(
    operator: &OperatorApps,
    owner: Option<&VerifiedPolicy>,
    record: &InstanceRecord,
) -> Result<(), String> {
    if operator.denies(record.app_id.as_str()) {
        return Err(format!("app {} is denied by the operator", record.app_id));
    }
    let Some(owner) = owner else {
        return Err(format!("app {} has no owner policy", record.app_id));
    };
    crate::control::service::admitted_by(owner, record)
}

/// Loads the operator's apps file.
pub(crate) fn load_policy(path: &Path) -> Result<Arc<PolicyFile<OperatorApps>>, RunError> {
    PolicyFile::load(path)
        .map(Arc::new)
        .map_err(RunError::Policy)
}

impl crate::proxy::app_policy::AppPolicyIntake for ControlService {
    fn offer(&self, app_id: &str, document: &str) -> Result<PolicyAccepted, PolicyRejected> {
        let app: AppId = app_id
            .parse()
            .map_err(|e: protocol::control::IdError| PolicyRejected::Invalid(e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match self.offer_policy(&app, document, now) {
            Ok(offer) => Ok(PolicyAccepted {
                installed: matches!(offer, PolicyOffer::Installed { .. }),
                version: offer.version_in_force(),
            }),
            Err(e @ PolicyOfferError::ConflictingVersion { .. }) => {
                Err(PolicyRejected::Conflict(e.to_string()))
            }
            Err(e @ PolicyOfferError::Store(_)) => {
                tracing::error!(app = %app, error = %e, "app policy not stored");
                Err(PolicyRejected::Internal(
                    "the gateway could not store the policy; nothing changed, retry later".into(),
                ))
            }
            Err(e) => Err(PolicyRejected::Invalid(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
