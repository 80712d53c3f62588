//! The gateway's own attestation: attester, trust anchors, RA-TLS identity, and the per-app check of an agent's
//! claims.

use std::path::Path;
use std::sync::Arc;

use attestation::policy::PolicyFile;
use attestation::policy::{AppPolicy, PolicyViolation};
use attestation::tdx::{CollateralConfig, CollateralSource};
use attestation::{Attester, Claims, Platform, SimSnpAttester, SimSnpPki, TrustAnchors, Verifier};
use protocol::control::{AppId, ErrorBody, ErrorCode};

use super::RunError;
use crate::config::{AttestationBackend, AttestationConfig};
use crate::control::PeerAttestation;

/// Builds the attester the configuration asks for.
pub fn attester(config: &AttestationConfig) -> Result<Arc<dyn Attester>, RunError> {
    let setup = |reason: String| RunError::Setup {
        step: "attester",
        reason,
    };
    match config.backend {
        AttestationBackend::Auto => attestation::attester::detect()
            .map(Arc::from)
            .map_err(|e| setup(e.to_string())),
        AttestationBackend::SevSnp | AttestationBackend::Tdx => {
            let wanted = if config.backend == AttestationBackend::Tdx {
                Platform::Tdx
            } else {
                Platform::SevSnp
            };
            let found: Arc<dyn Attester> = attestation::attester::detect()
                .map(Arc::from)
                .map_err(|e| setup(e.to_string()))?;
            if found.platform() != wanted {
                return Err(setup(format!(
                    "the configured backend is {wanted} but this machine attests as {}",
                    found.platform()
                )));
            }
            Ok(found)
        }
        AttestationBackend::SimSnp => {
            let dir = config
                .sim_pki
                .as_deref()
                .ok_or_else(|| setup("sim-snp needs attestation.sim_pki".into()))?;
            let pki = SimSnpPki::load_pem(dir).map_err(|e| setup(e.to_string()))?;
            let measurement = sim_measurement(config.sim_measurement.as_deref()).map_err(setup)?;
            Ok(Arc::new(SimSnpAttester::new(
                Arc::new(pki),
                measurement,
                [0; 32],
            )))
        }
        AttestationBackend::SimTdx => {
            let dir = config
                .sim_pki
                .as_deref()
                .ok_or_else(|| setup("sim-tdx needs attestation.sim_pki".into()))?;
            let pki = attestation::tdx::SimTdxPki::load(dir).map_err(|e| setup(e.to_string()))?;
            let mr_td = sim_measurement(config.sim_measurement.as_deref()).map_err(setup)?;
            let td = attestation::tdx::SimTdReport {
                mr_td,
                ..Default::default()
            };
            Ok(Arc::new(attestation::tdx::SimTdxAttester::new(
                Arc::new(pki),
                td,
            )))
        }
    }
}

/// Parses a simulated measurement (SNP MEASUREMENT or TDX MRTD: 96 hex characters; absent: zeros).
pub fn sim_measurement(hex_text: Option<&str>) -> Result<[u8; 48], String> {
    match hex_text {
        None => Ok([0; 48]),
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| format!("sim_measurement must be 96 hex characters, got {h:?}")),
    }
}

/// The vendor roots, plus the simulated roots in each configured directory (an SNP ARK, a TDX root CA, or both;
/// a directory with neither is an error).
pub fn trust_anchors(sim_roots: &[std::path::PathBuf]) -> Result<TrustAnchors, RunError> {
    let err = |reason: String| RunError::Setup {
        step: "trust anchors",
        reason,
    };
    let mut anchors = TrustAnchors::production();
    for dir in sim_roots {
        let snp = dir.join(attestation::snp::sim::files::ARK);
        let tdx = dir.join(attestation::tdx::sim::files::ROOT_CA);
        if !snp.is_file() && !tdx.is_file() {
            return Err(err(format!(
                "{} holds neither {} nor {}",
                dir.display(),
                snp.display(),
                tdx.display()
            )));
        }
        if let Ok(pem) = std::fs::read(&snp) {
            anchors = anchors
                .with_sim_snp_ark(&pem)
                .map_err(|e| err(format!("{}: {e}", snp.display())))?;
            tracing::warn!(root = %snp.display(), "trusting a SIMULATED AMD root");
        }
        if let Ok(pem) = std::fs::read(&tdx) {
            anchors = anchors
                .with_sim_tdx_root(&pem)
                .map_err(|e| err(format!("{}: {e}", tdx.display())))?;
            tracing::warn!(root = %tdx.display(), "trusting a SIMULATED Intel root");
        }
    }
    Ok(anchors)
}

/// The verifier of agents' evidence: `anchors`, and for TDX evidence without collateral the collateral files in
/// `collateral_dir` (read on first use and kept in memory while valid) and what `pccs_url` serves. Returns the
/// collateral source too when a PCCS is configured: its owner must refresh it ([`refresh_collateral`]).
pub fn verifier(
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
    .map_err(|e| RunError::Setup {
        step: "tdx collateral",
        reason: e.to_string(),
    })?;
    tracing::info!(dir = ?collateral_dir, pccs = ?pccs_url, "TDX collateral source");
    let source = Arc::new(source);
    let verifier = verifier.with_tdx_collateral(source.clone());
    Ok((verifier, pccs_url.is_some().then_some(source)))
}

/// Fetches the TDX collateral that verification missed, and refreshes collateral nearing its expiry, every
/// `every`, until `stop` turns true.
pub async fn refresh_collateral(
    source: Arc<CollateralSource>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
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
pub fn load_policy(path: &Path) -> Result<Arc<PolicyFile<AppPolicy>>, RunError> {
    PolicyFile::load(path)
        .map(Arc::new)
        .map_err(|e| RunError::Setup {
            step: "app policy",
            reason: e.to_string(),
        })
}
