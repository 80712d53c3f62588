//! The verifier: one entry point for evidence of every platform.
//!
//! [`Verifier::verify`] dispatches on the evidence's platform family, checks it against the configured
//! [`TrustAnchors`] at a given time, compares its report data with the expected value and returns typed
//! [`Claims`]. Policy is applied by the caller ([`crate::policy`]) or by the RA-TLS verifiers.

use std::sync::Arc;
use std::time::SystemTime;

use crate::claims::Claims;
use crate::error::VerifyError;
use crate::evidence::Evidence;
use crate::snp::{self, roots::TrustedRoot, SnpVerifier};
use crate::tdx::evidence_verifier::{self, TdxEvidenceVerifier};
use crate::tdx::CollateralSource;

/// The roots of trust a verifier accepts.
///
/// The real vendor roots (AMD's ARKs for Milan, Genoa and Turin; Intel's SGX Root CA) are always trusted. A
/// simulated root is trusted only when added here explicitly.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    sim_snp: Vec<TrustedRoot>,
    sim_tdx: Vec<Vec<u8>>,
}

impl TrustAnchors {
    /// Only the real vendor roots.
    pub fn production() -> Self {
        TrustAnchors::default()
    }

    /// Also trust a simulated AMD ARK (PEM or DER), e.g. `ark.pem` written by [`crate::SimSnpPki::write_pem`].
    pub fn with_sim_snp_ark(mut self, ark: &[u8]) -> Result<Self, VerifyError> {
        self.sim_snp.push(snp::roots::simulated_root(ark)?);
        Ok(self)
    }

    /// Also trust a simulated Intel root (PEM or DER), e.g. `tdx-root-ca.pem` written by
    /// [`crate::tdx::SimTdxPki::write_to`].
    pub fn with_sim_tdx_root(mut self, root: &[u8]) -> Result<Self, VerifyError> {
        self.sim_tdx.push(evidence_verifier::simulated_root(root)?);
        Ok(self)
    }

    /// Whether any simulated root is trusted.
    pub fn trusts_simulated(&self) -> bool {
        !self.sim_snp.is_empty() || !self.sim_tdx.is_empty()
    }

    /// The SHA-256 fingerprints (lowercase hex) of the simulated root certificates' DER, SEV-SNP ARKs then TDX
    /// roots, each in the order added: what a configuration digest records of the trust anchors. The real vendor
    /// roots are compiled in and need no fingerprint.
    pub fn simulated_root_fingerprints(&self) -> Vec<String> {
        use sha2::{Digest, Sha256};
        self.sim_snp
            .iter()
            .map(|root| root.ark.der.as_slice())
            .chain(self.sim_tdx.iter().map(Vec::as_slice))
            .map(|der| hex::encode(Sha256::digest(der)))
            .collect()
    }
}

/// Verified evidence: its claims and the window in which the verdict holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvidence {
    /// What the evidence says.
    pub claims: Claims,
    /// When every certificate and piece of collateral it was checked against is valid.
    pub valid: EvidenceWindow,
}

/// The span within which the certificates and collateral behind a verdict are all valid, in seconds since the
/// Unix epoch: from the latest start to the earliest end. Outside it the evidence must be verified again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceWindow {
    /// The latest start of validity.
    pub not_before: u64,
    /// The earliest end of validity (the verdict holds strictly before it).
    pub not_after: u64,
    /// What ends first, e.g. `TCB info` or `VCEK certificate`.
    pub ends_with: String,
}

impl EvidenceWindow {
    /// Whether `now` (seconds since the epoch) lies within the window.
    pub fn contains(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// Verifies evidence of any supported platform. Share one per process: it caches verified certificate chains.
#[derive(Debug)]
pub struct Verifier {
    snp: SnpVerifier,
    tdx: TdxEvidenceVerifier,
}

impl Verifier {
    /// A verifier trusting `anchors`.
    pub fn new(anchors: TrustAnchors) -> Self {
        Verifier {
            snp: SnpVerifier::new(anchors.sim_snp),
            tdx: TdxEvidenceVerifier::new(&anchors.sim_tdx, None),
        }
    }

    /// Use `source` for TDX evidence (its memory cache and collateral directory; a PCCS is consulted only by
    /// whoever refreshes the source, never during a TLS handshake). Its collateral is preferred over collateral
    /// the evidence carries, and carried collateral older than it is refused.
    pub fn with_tdx_collateral(mut self, source: Arc<CollateralSource>) -> Self {
        self.tdx.set_collateral(source);
        self
    }

    /// Refuse TDX collateral (the verifier's own or carried) whose TCB info or QE identity has a
    /// `tcbEvaluationDataNumber` below `minimum`; `None` sets no floor.
    pub fn with_tdx_min_evaluation(mut self, minimum: Option<u32>) -> Self {
        self.tdx.set_min_evaluation(minimum);
        self
    }

    /// Verify evidence at `now` and check that its report data equals `expected_report_data`.
    pub fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8; 64],
        now: SystemTime,
    ) -> Result<Claims, VerifyError> {
        let claims = self.verify_unbound(evidence, now)?;
        if claims.report_data != *expected_report_data {
            return Err(VerifyError::ReportDataMismatch {
                expected: hex::encode(expected_report_data),
                actual: hex::encode(claims.report_data),
            });
        }
        Ok(claims)
    }

    /// Verify evidence at `now` without checking its report data (the caller must check
    /// [`Claims::report_data`] if the evidence is meant to bind anything).
    pub fn verify_unbound(
        &self,
        evidence: &Evidence,
        now: SystemTime,
    ) -> Result<Claims, VerifyError> {
        self.verify_dated(evidence, now).map(|v| v.claims)
    }

    /// As [`Self::verify_unbound`], also saying until when the verdict holds: the window in which every
    /// certificate and piece of collateral the evidence was checked against is valid. Whoever remembers the
    /// verdict must verify again once `now` leaves [`VerifiedEvidence::valid`].
    pub fn verify_dated(
        &self,
        evidence: &Evidence,
        now: SystemTime,
    ) -> Result<VerifiedEvidence, VerifyError> {
        match evidence {
            Evidence::Snp(e) => self.snp.verify_dated(e, now),
            Evidence::Tdx(e) => self.tdx.verify(e, now),
        }
    }

    /// How many verified certificate chains (SNP) and quotes (TDX) are cached.
    pub fn cached_chains(&self) -> usize {
        self.snp.cached_chains() + self.tdx.cached()
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(TrustAnchors::production())
    }
}
