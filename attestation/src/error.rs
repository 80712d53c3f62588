//! Errors of attestation and verification.
//!
//! A [`VerifyError`] names the check that refused the evidence ([`VerifyError::check`]) and, for mismatches, the
//! expected and the actual value, so that an operator can act on it.

use std::path::PathBuf;

use crate::evidence::{EvidenceDecodeError, SigningKeyKind};
use crate::platform::{Platform, PlatformFamily};
use crate::policy::PolicyViolation;

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The evidence could not be decoded.
    #[error("malformed evidence: {0}")]
    Decode(#[from] EvidenceDecodeError),
    /// A structure inside the evidence is malformed.
    #[error("malformed {part}: {reason}")]
    Malformed {
        /// Which structure ("SNP report", "VCEK certificate", ...).
        part: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The evidence's signature chain leads to a simulated root, and no simulated root is trusted.
    #[error(
        "evidence is signed by a simulated {family:?} root of trust, which this verifier does not trust \
         (configure the simulated root explicitly to accept simulated evidence)"
    )]
    SimulatedRootNotTrusted {
        /// The platform family of the evidence.
        family: PlatformFamily,
    },
    /// The chain does not lead to any trusted root.
    #[error("untrusted root: {detail}")]
    UntrustedRoot {
        /// Which certificate names which root.
        detail: String,
    },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("{cert} certificate is not signed by the {issuer}: {reason}")]
    CertificateSignature {
        /// The certificate whose signature failed.
        cert: &'static str,
        /// Its expected issuer.
        issuer: &'static str,
        /// The underlying failure.
        reason: String,
    },
    /// A certificate is not valid at the verification time.
    #[error("{cert} certificate is not valid at {now}: valid from {not_before} to {not_after}")]
    CertificateValidity {
        /// The certificate.
        cert: &'static str,
        /// Start of its validity (RFC 3339).
        not_before: String,
        /// End of its validity (RFC 3339).
        not_after: String,
        /// The verification time (RFC 3339).
        now: String,
    },
    /// A value endorsed by the VCEK/VLEK certificate differs from the report.
    #[error("{field} in the {cert} certificate does not match the report: certificate has {expected}, report has {actual}")]
    EndorsementMismatch {
        /// The certificate ("VCEK" or "VLEK").
        cert: &'static str,
        /// The field ("hwID", "TCB bootloader", ...).
        field: &'static str,
        /// The certificate's value.
        expected: String,
        /// The report's value.
        actual: String,
    },
    /// The report says it was signed by another kind of key than the certificate presented.
    #[error("report is signed by a {actual} but the evidence carries a {expected} certificate")]
    SigningKeyKind {
        /// The kind of certificate presented.
        expected: SigningKeyKind,
        /// The kind the report names.
        actual: SigningKeyKind,
    },
    /// The report or quote signature does not verify.
    #[error("{part} signature is invalid: {reason}")]
    Signature {
        /// What was signed ("SNP report", ...).
        part: &'static str,
        /// The underlying failure.
        reason: String,
    },
    /// The evidence's report data does not equal the expected value (for RA-TLS: it does not bind the key).
    #[error("report_data mismatch: expected {expected}, evidence has {actual}")]
    ReportDataMismatch {
        /// Expected report data (hex).
        expected: String,
        /// Report data in the evidence (hex).
        actual: String,
    },
    /// The claims were verified but the policy refuses them.
    #[error("policy: {0}")]
    Policy(#[from] PolicyViolation),
    /// A piece of collateral (TDX TCB info, QE identity, CRL, certificate) has expired at the verification time.
    #[error(
        "collateral expired: {item} was valid until {valid_until}, verification time is {now}"
    )]
    CollateralExpired {
        /// The piece of collateral that expired first.
        item: String,
        /// When it stopped being valid (RFC 3339).
        valid_until: String,
        /// The verification time (RFC 3339).
        now: String,
    },
    /// Collateral needed to verify the evidence is missing, malformed or not yet valid.
    #[error("collateral: {reason}")]
    Collateral {
        /// What is wrong.
        reason: String,
    },
    /// A certificate chain does not validate up to the trusted root (bad signature, revoked, wrong root).
    #[error("{chain} certificate chain does not validate: {reason}")]
    CertificateChain {
        /// Which chain ("PCK", "TCB signing").
        chain: &'static str,
        /// What path validation reported.
        reason: String,
    },
    /// The evidence verified cryptographically but a platform-defined check refused it (TDX: TCB level, QE
    /// identity, TD attributes).
    #[error("{reason}")]
    Refused {
        /// The check ("tcb", "qe-identity", "td-attributes", ...).
        check: &'static str,
        /// What it found.
        reason: String,
    },
    /// This build or configuration cannot verify evidence of this platform.
    #[error("verification of {0} evidence is not supported")]
    Unsupported(Platform),
}

impl VerifyError {
    /// A short stable name of the check that refused the evidence, for logs and metrics.
    pub fn check(&self) -> &'static str {
        match self {
            VerifyError::Decode(_) | VerifyError::Malformed { .. } => "format",
            VerifyError::SimulatedRootNotTrusted { .. } | VerifyError::UntrustedRoot { .. } => {
                "root-of-trust"
            }
            VerifyError::CertificateSignature { .. } | VerifyError::CertificateChain { .. } => {
                "certificate-chain"
            }
            VerifyError::CollateralExpired { .. } | VerifyError::Collateral { .. } => "collateral",
            VerifyError::Refused { check, .. } => check,
            VerifyError::CertificateValidity { .. } => "certificate-validity",
            VerifyError::EndorsementMismatch { .. } | VerifyError::SigningKeyKind { .. } => {
                "endorsement"
            }
            VerifyError::Signature { .. } => "evidence-signature",
            VerifyError::ReportDataMismatch { .. } => "binding",
            VerifyError::Policy(_) => "policy",
            VerifyError::Unsupported(_) => "platform",
        }
    }
}

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// No TEE interface is present on this machine.
    #[error("no attestation interface available: {0}")]
    Unavailable(String),
    /// Reading or writing an interface file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted ("read", "write", "create").
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The interface did not follow its protocol (e.g. a concurrent writer changed the configfs-tsm generation).
    #[error("attestation interface protocol error: {0}")]
    Protocol(String),
    /// The device or firmware refused the request.
    #[error("attestation device error: {0}")]
    Device(String),
    /// The interface returned output that could not be understood.
    #[error("unexpected attestation output: {0}")]
    Malformed(String),
}
