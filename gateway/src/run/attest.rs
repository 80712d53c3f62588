//! The gateway's own attestation: attester, trust anchors, RA-TLS identity, and the per-app check of an agent's
//! claims.

use std::path::Path;
use std::sync::Arc;

use attestation::policy::PolicyFile;
use attestation::policy::{AppPolicy, PolicyViolation};
use attestation::tdx::{CollateralConfig, CollateralSource};
use attestation::{Attester, Claims, TrustAnchors, Verifier};
use protocol::control::{AppId, ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;

use super::RunError;
use crate::config::AttestationConfig;
use crate::control::PeerAttestation;

/// Builds the attester the configuration asks for.
pub(crate) fn attester(config: &AttestationConfig) -> Result<Arc<dyn Attester>, RunError> {
    config
        .backend
        .attester(config.sim_pki.as_deref(), config.sim_measurement.as_deref())
        .map_err(RunError::Attester)
}

/// The vendor roots, plus the simulated roots in each configured directory (an SNP ARK, a TDX root CA, or both;
/// a directory with neither is an error).
pub(crate) fn trust_anchors(sim_roots: &[std::path::PathBuf]) -> Result<TrustAnchors, RunError> {
    attestation::attester::select::trust_anchors(sim_roots).map_err(RunError::TrustAnchors)
}

/// The verifier of agents' evidence: `anchors`, and for TDX evidence without collateral the collateral files in
/// `collateral_dir` (read on first use and kept in memory while valid) and what `pccs_url` serves. Returns the
/// collateral source too when a PCCS is configured: its owner must refresh it ([`refresh_collateral`]).
pub(crate) fn verifier(
    anchors: TrustAnchors,
    collateral_dir: Option<&Path>,
    pccs_url: Option<&str>,
) -> Result<(Verifier, Option<Arc<CollateralSource>>), RunError> {
    let verifier = Verifier::new(anchors);
    if collateral_dir.is_none() && pccs_url.is_none() {
        return Ok((verifier, None));
    }
    let source = CollateralSource::new(CollateralConfig {
        cache_dir: collateral_dir.map(Path::to_path_buf),
        pccs_url: pccs_url.map(str::to_owned),
        ..Default::default()
    })
    .map_err(RunError::Collateral)?;
    tracing::info!(dir = ?collateral_dir, pccs = ?pccs_url, "TDX collateral source");
    let source = Arc::new(source);
    let verifier = verifier.with_tdx_collateral(source.clone());
    Ok((verifier, pccs_url.is_some().then_some(source)))
}

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

/// A one-line summary of claims for logs and the registry: platform, the launch measurement (SNP
/// `measurement`, TDX `mr_td`) and the debug flag.
pub fn summary(claims: &Claims) -> String {
    let value = serde_json::to_value(claims).unwrap_or_default();
    let measurement = ["measurement", "mr_td"]
        .iter()
        .find_map(|k| {
            value
                .get(*k)
                .and_then(|v| v.as_str())
                .map(|m| format!(" {k}={m}"))
        })
        .unwrap_or_default();
    format!(
        "{}{measurement} debug={}",
        claims.platform.as_str(),
        claims.debug
    )
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
            Ok(_) => Ok(summary(&self.claims)),
            Err(PolicyViolation::UnknownApp(_)) => Err(ErrorBody::new(
                ErrorCode::AppUnknown,
                format!("app {app_id} is unknown to this gateway's policy; ask its operator to add the app"),
            )),
            Err(v) => Err(ErrorBody::new(
                ErrorCode::PolicyRefused,
                format!("attestation refused for app {app_id}: {v} (evidence: {})", summary(&self.claims)),
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
