//! RA-TLS: X.509 certificates that carry TEE evidence bound to their key, and the `rustls` verifiers that check
//! them.
//!
//! - [`RaTlsCertificate::generate`] makes a fresh P-256 key in memory, asks an [`crate::Attester`] for evidence whose
//!   report data binds the key for [`Purpose::RaTlsKey`] (SHA-512 of `tee-gateway/v1/ra-tls-key:` and the DER
//!   SubjectPublicKeyInfo, see [`crate::binding`]), and self-signs a short-lived certificate (default 1 h)
//!   carrying the evidence in a non-critical CMW extension (`id-pe-cmw`, [`CMW_OID`]).
//! - [`RaTlsVerifier`] checks such a certificate: validity times, evidence (through [`crate::Verifier`]), binding
//!   of the evidence to the certificate's key for [`Purpose::RaTlsKey`] and no other purpose (evidence over the
//!   same key made for another use, such as the gateway's public TLS key, is refused and its purpose named), then a [`crate::policy::ClaimsPolicy`]. It remembers verified
//!   certificates so that the application can read a peer's [`crate::Claims`] after the handshake
//!   ([`RaTlsVerifier::peer_claims`]) and a repeated handshake with the same certificate costs no signature checks.
//! - [`RaTlsServerCertVerifier`] and [`RaTlsClientCertVerifier`] plug it into `rustls`; [`RaTlsIdentity`] serves
//!   and renews one's own certificate; [`server_config`] and [`client_config`] assemble mutual RA-TLS.
//!
//! `docs/ra-tls.md` specifies the certificate format.

mod cert;
mod cmw;
mod config;
mod identity;
#[cfg(test)]
mod tests;
mod verify;

pub use cert::{parse_certificate, CertOptions, ParsedCertificate, RaTlsCertificate};
pub use cmw::{
    decode_cmw, decode_extension, encode_cmw, encode_extension, CmwExtension,
    CONFIG_DIGEST_MEDIA_TYPE,
};
pub use config::{client_config, server_config};
pub use identity::RaTlsIdentity;
pub use verify::{
    ClientPeer, RaTlsCertVerifier, RaTlsClientCertVerifier, RaTlsServerCertVerifier, RaTlsVerifier,
    ServerPeer, DEFAULT_MAX_LIFETIME,
};

use crate::binding::{Purpose, ReportData};
use crate::config_digest::ConfigDigest;
use crate::error::{AttestError, VerifyError};

/// The report data an RA-TLS certificate's evidence must carry: its key bound for [`Purpose::RaTlsKey`].
pub fn report_data_for_spki(spki_der: &[u8]) -> ReportData {
    ReportData::new(Purpose::RaTlsKey, spki_der)
}

/// The report data of an RA-TLS certificate whose key is `spki_der` and that binds `config_digest`: for
/// [`Purpose::RaTlsKeyConfigured`] over the digest then the key, or [`report_data_for_spki`] without a digest.
pub fn report_data_for_key(spki_der: &[u8], config_digest: Option<&ConfigDigest>) -> ReportData {
    match config_digest {
        None => report_data_for_spki(spki_der),
        Some(d) => {
            let mut payload = Vec::with_capacity(32 + spki_der.len());
            payload.extend_from_slice(d.as_bytes());
            payload.extend_from_slice(spki_der);
            ReportData::new(Purpose::RaTlsKeyConfigured, &payload)
        }
    }
}

/// `id-pe-cmw` (1.3.6.1.5.5.7.1.35): the X.509 extension carrying a conceptual message wrapper.
pub const CMW_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 35];

/// [`CMW_OID`] in dotted form.
pub const CMW_OID_STR: &str = "1.3.6.1.5.5.7.1.35";

/// Why an RA-TLS certificate could not be made or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaTlsError {
    /// The certificate is not valid X.509, or lacks what RA-TLS needs.
    #[error("RA-TLS certificate: {0}")]
    Certificate(String),
    /// The certificate has no evidence extension.
    #[error("RA-TLS certificate carries no evidence (extension {CMW_OID_STR} missing)")]
    NoEvidence,
    /// The evidence extension is malformed.
    #[error("RA-TLS evidence extension: {0}")]
    Cmw(String),
    /// The certificate is outside its validity period.
    #[error("RA-TLS certificate is not valid at {now}: valid from {not_before} to {not_after}")]
    Validity {
        /// Start (RFC 3339).
        not_before: String,
        /// End (RFC 3339).
        not_after: String,
        /// Verification time (RFC 3339).
        now: String,
    },
    /// The certificate's lifetime (notAfter - notBefore) exceeds the verifier's maximum.
    #[error(
        "RA-TLS certificate lifetime too long: valid for {lifetime_secs} s (notAfter - notBefore), the maximum is \
         {max_secs} s"
    )]
    LifetimeTooLong {
        /// notAfter - notBefore, in seconds.
        lifetime_secs: i64,
        /// The maximum accepted, in seconds.
        max_secs: u64,
    },
    /// The evidence binds the certificate's key, but for another use than RA-TLS (for instance the gateway's public
    /// TLS key, which the operator may hold).
    #[error(
        "RA-TLS certificate carries evidence made for another purpose: it binds the key for {found}, not {expected}"
    )]
    WrongPurpose {
        /// The purpose an RA-TLS certificate needs.
        expected: Purpose,
        /// The purpose the evidence was made for.
        found: Purpose,
    },
    /// The evidence, its binding or the policy refused the certificate.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Producing evidence failed.
    #[error("attestation: {0}")]
    Attest(#[from] AttestError),
    /// Building the certificate or key failed.
    #[error("building the RA-TLS certificate: {0}")]
    Build(String),
}

impl RaTlsError {
    /// The policy's refusal, when the certificate was verified and only the policy refused its claims.
    pub fn policy_violation(&self) -> Option<&crate::policy::PolicyViolation> {
        match self {
            RaTlsError::Verify(VerifyError::Policy(v)) => Some(v),
            _ => None,
        }
    }

    /// A short stable name of the check that failed, for logs and metrics.
    pub fn check(&self) -> &'static str {
        match self {
            RaTlsError::Certificate(_) | RaTlsError::NoEvidence | RaTlsError::Cmw(_) => {
                "certificate-format"
            }
            RaTlsError::Validity { .. } => "certificate-validity",
            RaTlsError::LifetimeTooLong { .. } => "certificate-lifetime",
            RaTlsError::WrongPurpose { .. } => "binding",
            RaTlsError::Verify(v) => v.check(),
            RaTlsError::Attest(_) => "attestation",
            RaTlsError::Build(_) => "build",
        }
    }
}
