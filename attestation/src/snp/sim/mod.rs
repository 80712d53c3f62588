//! `sim-snp`: a simulated AMD key hierarchy and attester.
//!
//! The simulated PKI mirrors AMD's: an ARK and an ASK (RSA-4096, self-signed and ARK-signed with RSA-PSS/SHA-384)
//! and a VCEK (P-384, ASK-signed) carrying the same extensions as a real VCEK (productName, TCB SPLs, hwID). It is
//! derived deterministically from a seed, and its certificate names carry the organisation
//! [`SIM_ORGANIZATION`] so that a verifier can tell a user why such evidence is refused. Reports use the real
//! 1184-byte layout and are signed by the simulated VCEK, so the ordinary SNP verifier checks them; it accepts
//! them only when told to trust the simulated ARK ([`crate::TrustAnchors::with_sim_snp_ark`]).
//!
//! - [`certs`]: the key hierarchy ([`SimSnpPki`]), its PEM files;
//! - [`report`]: signed reports and complete evidence ([`SimReportRequest`]);
//! - [`attester`]: [`SimSnpAttester`], an [`crate::Attester`] for a fixed guest.

pub mod attester;
pub mod certs;
pub mod report;

pub use attester::SimSnpAttester;
pub use certs::SimSnpPki;
pub use report::SimReportRequest;

use crate::claims::SnpTcb;

/// Organisation name in every simulated AMD certificate.
pub const SIM_ORGANIZATION: &str = "tee-gateway simulated AMD (not a TEE)";

/// The TCB the simulated chip reports and its VCEK endorses.
pub const SIM_TCB: SnpTcb = SnpTcb {
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 115,
    fmc: None,
};

/// Files written by [`SimSnpPki::write_pem`].
pub mod files {
    /// The simulated ARK certificate: the file to trust.
    pub const ARK: &str = "snp-ark.pem";
    /// The simulated ASK certificate.
    pub const ASK: &str = "snp-ask.pem";
    /// The simulated VCEK certificate.
    pub const VCEK: &str = "snp-vcek.pem";
    /// The simulated VCEK private key (PKCS#8).
    pub const VCEK_KEY: &str = "snp-vcek-key.pem";
}

/// Errors of the simulated PKI.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Building a key or certificate failed.
    #[error("building the simulated {what}: {reason}")]
    Build {
        /// What was being built.
        what: &'static str,
        /// The underlying failure.
        reason: String,
    },
    /// A PKI file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PKI file holds something unexpected.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn build_err(what: &'static str) -> impl Fn(String) -> SimError {
    move |reason| SimError::Build { what, reason }
}
