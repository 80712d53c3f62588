//! Attestation for tee-gateway.
//!
//! This crate owns everything about TEE evidence: its types ([`Platform`], [`Evidence`], [`Claims`]), the
//! attesters that produce it ([`attester`]: configfs-tsm, `/dev/sev-guest`, simulated), the [`Verifier`] that
//! checks it (SEV-SNP through `sev`; TDX through `dcap-qvl`), the [`policy`] engine, the app owners' signed policies
//! ([`owner`]), and RA-TLS certificates
//! together with the `rustls` verifiers that check them ([`ratls`]).
//!
//! Real vendor roots are built in; simulated roots are trusted only when configured in [`TrustAnchors`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod attester;
pub mod binding;
pub mod claims;
pub mod config_digest;
pub mod error;
pub mod evidence;
mod hex_serde;
pub mod owner;
pub mod platform;
pub mod policy;
pub mod ratls;
pub mod reload;
pub mod sealing;
pub mod settings;
pub mod snp;
pub mod tdx;
pub mod verifier;

pub use attester::Attester;
pub use binding::{KeyOrigin, Purpose, ReportData};
pub use claims::{
    Claims, ClaimsSummary, PlatformClaims, SnpClaims, SnpProduct, SnpTcb, TcbStatus, TdxClaims,
};
pub use config_digest::ConfigDigest;
pub use error::{AttestError, VerifyError};
pub use evidence::{Evidence, SigningKeyKind, SnpEvidence, TdxEvidence};
pub use platform::{Platform, PlatformFamily};
pub use settings::{AttestationSettings, VerifierSetup};
pub use snp::{SimReportRequest, SimSnpAttester, SimSnpPki};
pub use tdx::{SimTdReport, SimTdxAttester, SimTdxPki};
pub use verifier::{EvidenceWindow, TrustAnchors, VerifiedEvidence, Verifier};

#[cfg(test)]
pub(crate) mod test_support {
    //! Shared fixtures for unit tests.
    use std::sync::{Arc, OnceLock};

    /// One small simulated PKI per test process.
    pub(crate) fn pki() -> Arc<crate::SimSnpPki> {
        static PKI: OnceLock<Arc<crate::SimSnpPki>> = OnceLock::new();
        PKI.get_or_init(|| Arc::new(crate::SimSnpPki::generate_small("unit tests").unwrap()))
            .clone()
    }

    /// Asserts that the message of `err` contains every one of `parts`.
    #[track_caller]
    pub(crate) fn assert_message_names(err: &impl std::fmt::Display, parts: &[&str]) {
        let text = err.to_string();
        for part in parts {
            assert!(text.contains(part), "{part:?} is missing from: {text}");
        }
    }
}
