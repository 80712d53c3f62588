//! Errors of TDX quote parsing, verification, collateral retrieval and quote generation.

use std::path::PathBuf;

/// The signed structures of a TDX quote and its collateral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedPart {
    /// The quote header and TD report, signed by the quote's attestation key.
    TdReport,
    /// The quoting enclave's report, signed by the PCK certificate's key.
    QeReport,
    /// The TCB info collateral, signed by the TCB signing certificate.
    TcbInfo,
    /// The QE identity collateral, signed by the TCB signing certificate.
    QeIdentity,
}

impl std::fmt::Display for SignedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignedPart::TdReport => "TD report (attestation key signature)",
            SignedPart::QeReport => "QE report (PCK signature)",
            SignedPart::TcbInfo => "TCB info (TCB signing key signature)",
            SignedPart::QeIdentity => "QE identity (TCB signing key signature)",
        })
    }
}

/// Why a TDX quote could not be parsed, verified, fetched or produced.
///
/// Verification errors name the structure at fault and, where there is one, the expected and the actual value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdxError {
    /// The quote bytes do not parse as a DCAP quote.
    #[error("malformed TDX quote: {0}")]
    MalformedQuote(String),
    /// The quote parses but is not a TDX quote this verifier handles.
    #[error("unsupported TDX quote: {0}")]
    UnsupportedQuote(String),
    /// The collateral does not parse.
    #[error("malformed TDX collateral: {0}")]
    MalformedCollateral(String),
    /// A piece of collateral (TCB info, QE identity, a CRL or a certificate) is past its validity at the
    /// verification time.
    #[error(
        "TDX collateral expired: {item} was valid until {valid_until}, verification time is {now}"
    )]
    CollateralExpired {
        /// Which piece of collateral expired first.
        item: String,
        /// When it stopped being valid (RFC 3339).
        valid_until: String,
        /// The verification time (RFC 3339).
        now: String,
    },
    /// A piece of collateral is not valid yet at the verification time.
    #[error("TDX collateral not yet valid: {item} is valid from {valid_from}, verification time is {now}")]
    CollateralNotYetValid {
        /// Which piece of collateral.
        item: String,
        /// When it becomes valid (RFC 3339).
        valid_from: String,
        /// The verification time (RFC 3339).
        now: String,
    },
    /// The collateral carried in the evidence is older than the collateral the verifier holds for the same
    /// platform (a lower TCB evaluation data number, or the same number issued earlier): a rollback to collateral
    /// from before a TCB recovery.
    #[error(
        "TDX collateral carried in the evidence is older than the verifier's: its {item} has \
         tcbEvaluationDataNumber {carried} (issued {carried_issued}), the verifier's has {verifier} (issued \
         {verifier_issued})"
    )]
    CollateralRollback {
        /// `TCB info` or `QE identity`.
        item: &'static str,
        /// The carried collateral's evaluation data number.
        carried: u32,
        /// The carried collateral's issue date (RFC 3339).
        carried_issued: String,
        /// The verifier's evaluation data number.
        verifier: u32,
        /// The verifier's issue date (RFC 3339).
        verifier_issued: String,
    },
    /// The collateral's TCB evaluation data number is below the configured minimum.
    #[error(
        "TDX collateral too old: its {item} has tcbEvaluationDataNumber {number}, below the minimum {minimum} \
         this verifier accepts"
    )]
    EvaluationBelowMinimum {
        /// `TCB info` or `QE identity`.
        item: &'static str,
        /// The collateral's number.
        number: u32,
        /// The configured minimum.
        minimum: u32,
    },
    /// A certificate chain does not lead to the trusted root, or one of its certificates is revoked.
    #[error(
        "TDX {chain} certificate chain does not verify against the trusted root ({root}): {detail}"
    )]
    CertificateChain {
        /// Which chain: `PCK`, `TCB signing` or `CRL`.
        chain: &'static str,
        /// The trusted root the chain was checked against.
        root: String,
        /// What the path validation reported.
        detail: String,
    },
    /// A signature does not verify.
    #[error("invalid signature over the {0}")]
    SignatureInvalid(SignedPart),
    /// The QE report does not commit to the quote's attestation key.
    #[error("the QE report does not bind the attestation key: report_data[..32] != SHA-256(attestation key || QE auth data)")]
    AttestationKeyNotBound,
    /// The quoting enclave does not match the signed QE identity.
    #[error("quoting enclave does not match the QE identity: {0}")]
    QeIdentityMismatch(String),
    /// The platform's TCB matches no level of the TCB info (it is older than every listed level), or the
    /// TDX module identity does not match.
    #[error("TDX platform TCB refused: {0}")]
    TcbRefused(String),
    /// The platform or QE TCB is revoked.
    #[error("TDX TCB status is Revoked")]
    TcbRevoked,
    /// The TD attributes are not acceptable to any policy (e.g. migratable TD, SEPT_VE_DISABLE clear).
    #[error("TD attributes refused: {0}")]
    TdAttributes(String),
    /// Any other verification failure reported by the quote verification library.
    #[error("TDX quote verification failed: {0}")]
    Rejected(String),
    /// No source could provide collateral.
    #[error("no TDX collateral for FMSPC {fmspc} ({ca} CA): {}", attempts.join("; "))]
    CollateralUnavailable {
        /// The platform's FMSPC (hex).
        fmspc: String,
        /// The PCK CA (`processor` or `platform`).
        ca: String,
        /// What each source said.
        attempts: Vec<String>,
    },
    /// A collateral service answered with a body larger than the client accepts.
    #[error("fetching TDX collateral from {url}: the response exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The URL requested.
        url: String,
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// A collateral service answered with an error or an unusable response.
    #[error("fetching TDX collateral from {url}: {detail}")]
    Fetch {
        /// The URL requested.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TDX guest interface (configfs-tsm or `/dev/tdx_guest`) failed.
    #[error("TDX guest: {0}")]
    Device(String),
    /// The simulated Intel PKI could not be generated, stored or loaded.
    #[error("simulated TDX PKI: {0}")]
    SimPki(String),
}

impl TdxError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        TdxError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Classify an error from the quote verification library by the step that failed.
    ///
    /// `dcap-qvl` (pinned exactly in the workspace manifest) reports failures as `anyhow` errors. Where the chain
    /// holds a typed source, that decides: a `serde_json` error is collateral that does not parse. Everything
    /// else is told apart by the words of the message; `error/tests.rs` pins each message of the pinned version
    /// to its variant, so that an upgrade which rewords one fails there.
    pub(crate) fn from_qvl(err: &anyhow::Error, root: &str) -> Self {
        let text = format!("{err:#}");
        if err.chain().any(|cause| cause.is::<serde_json::Error>()) {
            return TdxError::MalformedCollateral(text);
        }
        let has = |needle: &str| text.contains(needle);
        if has("Failed to decode quote") {
            TdxError::MalformedQuote(text)
        } else if has("Unsupported")
            || has("Unknown QE vendor")
            || has("TEE quote must have version")
        {
            TdxError::UnsupportedQuote(text)
        } else if has("Signature is invalid for tcb_info") {
            TdxError::SignatureInvalid(SignedPart::TcbInfo)
        } else if has("Signature is invalid for qe_identity") {
            TdxError::SignatureInvalid(SignedPart::QeIdentity)
        } else if has("Signature is invalid for qe_report") {
            TdxError::SignatureInvalid(SignedPart::QeReport)
        } else if has("ISV enclave report signature is invalid") {
            TdxError::SignatureInvalid(SignedPart::TdReport)
        } else if has("QE report hash mismatch") {
            TdxError::AttestationKeyNotBound
        } else if has("issue date is in the future") {
            TdxError::CollateralNotYetValid {
                item: "collateral".into(),
                valid_from: "(see detail)".into(),
                now: text,
            }
        } else if has("expired") || has("CrlExpired") {
            TdxError::CollateralExpired {
                item: "collateral".into(),
                valid_until: "(see detail)".into(),
                now: text,
            }
        } else if has("PCK") && (has("certificate chain") || has("PCK certificate")) {
            TdxError::CertificateChain {
                chain: "PCK",
                root: root.into(),
                detail: text,
            }
        } else if has("Failed to verify certificate chain")
            || has("Failed to load root ca")
            || has("signer must be issued")
        {
            TdxError::CertificateChain {
                chain: "TCB signing",
                root: root.into(),
                detail: text,
            }
        } else if has("TCB status is invalid: Revoked") {
            TdxError::TcbRevoked
        } else if has("CRL") || has("Revocation") || (has("Revoked") && has("Cert")) {
            TdxError::CertificateChain {
                chain: "CRL",
                root: root.into(),
                detail: text,
            }
        } else if has("QE ") || has("QE Identity") {
            TdxError::QeIdentityMismatch(text)
        } else if has("TCB level")
            || has("TDX module")
            || has("Fmspc mismatch")
            || has("TCB info")
            || has("TCB Info")
        {
            TdxError::TcbRefused(text)
        } else if has("TD attributes")
            || has("SEPT_VE_DISABLE")
            || has("migration")
            || has("SERVTD")
            || has("MR service TD")
        {
            TdxError::TdAttributes(text)
        } else {
            TdxError::Rejected(text)
        }
    }
}

#[cfg(test)]
mod tests;
