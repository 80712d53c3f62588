//! The SEV-SNP attestation report: layout, signature and the claims it yields.
//!
//! Fields are read with `sev`'s parser; the signature is checked over the report's raw bytes `0..0x2A0` exactly as
//! received (not over a re-serialisation), and the unsigned tail must be zero, so that no bit of the report can be
//! changed without the report being refused.

use p384::ecdsa::signature::DigestVerifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use sha2::{Digest, Sha384};

use super::claims::{SnpClaims, SnpProduct};
use super::evidence::SigningKeyKind;
use crate::error::VerifyError;

/// Length of an SNP attestation report.
pub(crate) const REPORT_LEN: usize = 1184;
/// Offset of the signature; the signed bytes are those before it.
pub(crate) const SIGNED_LEN: usize = 0x2A0;
/// Length of each of the signature components R and S (little-endian, zero-padded).
const SIG_COMPONENT_LEN: usize = 72;
/// Signature algorithm 1: ECDSA P-384 with SHA-384.
const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

fn malformed(reason: impl Into<String>) -> VerifyError {
    VerifyError::Malformed {
        part: "SNP report",
        reason: reason.into(),
    }
}

/// A report whose layout has been checked (but not yet its signature).
#[derive(Debug, Clone)]
pub(crate) struct Report<'a> {
    /// The raw bytes.
    pub raw: &'a [u8],
    /// The parsed fields.
    pub parsed: AttestationReport,
}

impl<'a> Report<'a> {
    /// Check the length and layout and parse the fields.
    pub(crate) fn parse(raw: &'a [u8]) -> Result<Self, VerifyError> {
        if raw.len() != REPORT_LEN {
            return Err(malformed(format!(
                "expected {REPORT_LEN} bytes, got {}",
                raw.len()
            )));
        }
        let parsed = AttestationReport::from_bytes(raw).map_err(|e| malformed(e.to_string()))?;
        if parsed.version < 2 {
            return Err(malformed(format!(
                "unsupported report version {}",
                parsed.version
            )));
        }
        if parsed.sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(malformed(format!(
                "signature algorithm {} (expected {SIG_ALGO_ECDSA_P384_SHA384}, ECDSA P-384 with SHA-384)",
                parsed.sig_algo
            )));
        }
        if parsed.key_info.mask_chip_key() {
            return Err(malformed("the chip key is masked: the report is unsigned"));
        }
        // Everything after the signature components is reserved and unsigned: it must be zero.
        let sig_end = SIGNED_LEN + 2 * SIG_COMPONENT_LEN;
        if raw[sig_end..].iter().any(|&b| b != 0) {
            return Err(malformed("reserved bytes after the signature are not zero"));
        }
        Ok(Report { raw, parsed })
    }

    /// The kind of key the report says signed it.
    pub(crate) fn signing_key(&self) -> Result<SigningKeyKind, VerifyError> {
        match self.parsed.key_info.signing_key() {
            0 => Ok(SigningKeyKind::Vcek),
            1 => Ok(SigningKeyKind::Vlek),
            other => Err(malformed(format!(
                "signing key field {other} names neither VCEK nor VLEK"
            ))),
        }
    }

    /// Verify the ECDSA P-384 signature over bytes `0..0x2A0` with the VCEK/VLEK public key.
    pub(crate) fn verify_signature(&self, key: &VerifyingKey) -> Result<(), VerifyError> {
        let sig = signature_from_raw(&self.raw[SIGNED_LEN..SIGNED_LEN + 2 * SIG_COMPONENT_LEN])?;
        let digest = Sha384::new_with_prefix(&self.raw[..SIGNED_LEN]);
        key.verify_digest(digest, &sig)
            .map_err(|e| VerifyError::Signature {
                part: "SNP report",
                reason: format!("the report is not signed by the presented key: {e}"),
            })
    }

    /// The claims this report makes.
    pub(crate) fn claims(&self, product: SnpProduct, signing_key: SigningKeyKind) -> SnpClaims {
        let r = &self.parsed;
        SnpClaims {
            product,
            report_version: r.version,
            measurement: r.measurement,
            host_data: r.host_data,
            guest_policy: u64::from_le_bytes(self.raw[0x08..0x10].try_into().unwrap_or([0; 8])),
            guest_svn: r.guest_svn,
            vmpl: r.vmpl,
            family_id: r.family_id,
            image_id: r.image_id,
            id_key_digest: r.id_key_digest,
            reported_tcb: r.reported_tcb.into(),
            current_tcb: r.current_tcb.into(),
            committed_tcb: r.committed_tcb.into(),
            launch_tcb: r.launch_tcb.into(),
            chip_id: r.chip_id,
            signing_key,
        }
    }

    /// Whether the guest policy allows debugging.
    pub(crate) fn debug(&self) -> bool {
        self.parsed.policy.debug_allowed()
    }
}

/// Convert AMD's little-endian, 72-byte-padded R and S into an ECDSA signature.
fn signature_from_raw(raw: &[u8]) -> Result<Signature, VerifyError> {
    let bad = |reason: &str| VerifyError::Signature {
        part: "SNP report",
        reason: reason.to_owned(),
    };
    let (r, s) = raw.split_at(SIG_COMPONENT_LEN);
    if r[48..].iter().chain(&s[48..]).any(|&b| b != 0) {
        return Err(bad("signature component padding is not zero"));
    }
    let be = |le: &[u8]| {
        let mut out = [0u8; 48];
        for (o, b) in out.iter_mut().zip(le[..48].iter().rev()) {
            *o = *b;
        }
        out
    };
    Signature::from_scalars(be(r), be(s)).map_err(|_| bad("R or S is not a valid P-384 scalar"))
}

/// Store an ECDSA signature in AMD's report layout (little-endian R and S, each padded to 72 bytes).
pub(crate) fn signature_to_raw(sig: &Signature) -> [u8; 2 * SIG_COMPONENT_LEN] {
    let mut out = [0u8; 2 * SIG_COMPONENT_LEN];
    let (r, s) = sig.split_bytes();
    for (i, b) in r.iter().rev().enumerate() {
        out[i] = *b;
    }
    for (i, b) in s.iter().rev().enumerate() {
        out[SIG_COMPONENT_LEN + i] = *b;
    }
    out
}
