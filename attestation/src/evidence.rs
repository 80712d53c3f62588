//! Evidence: what an attester produces and a verifier checks.
//!
//! Each variant is one platform family; real and simulated platforms share a variant because they share the
//! format. Which of the two a piece of evidence is becomes known only once its signature chain has been checked
//! against a trust anchor.
//!
//! Evidence has a compact binary encoding, identified by a media type, that RA-TLS certificates carry inside a CMW
//! record (`docs/ra-tls.md` specifies both).

use serde::{Deserialize, Serialize};

use crate::platform::PlatformFamily;
pub use crate::tdx::{TdxEvidence, TDX_MEDIA_TYPE};

/// Media type of SEV-SNP evidence (report plus certificates) in a CMW record.
pub const SNP_MEDIA_TYPE: &str = "application/vnd.tee-gateway.sev-snp-evidence.v1";

/// Evidence from a TEE.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Evidence {
    /// AMD SEV-SNP (real or simulated).
    Snp(SnpEvidence),
    /// Intel TDX (real or simulated).
    Tdx(TdxEvidence),
}

impl Evidence {
    /// The platform family this evidence belongs to.
    pub fn family(&self) -> PlatformFamily {
        match self {
            Evidence::Snp(_) => PlatformFamily::Snp,
            Evidence::Tdx(_) => PlatformFamily::Tdx,
        }
    }

    /// The media type naming this evidence's encoding.
    pub fn media_type(&self) -> &'static str {
        match self {
            Evidence::Snp(_) => SNP_MEDIA_TYPE,
            Evidence::Tdx(_) => TDX_MEDIA_TYPE,
        }
    }

    /// Encode the evidence in the binary format named by [`Evidence::media_type`].
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Evidence::Snp(e) => e.encode(),
            Evidence::Tdx(e) => e.encode(),
        }
    }

    /// Decode evidence given its media type and encoded bytes.
    pub fn decode(media_type: &str, bytes: &[u8]) -> Result<Self, EvidenceDecodeError> {
        match media_type {
            SNP_MEDIA_TYPE => Ok(Evidence::Snp(SnpEvidence::decode(bytes)?)),
            TDX_MEDIA_TYPE => Ok(Evidence::Tdx(TdxEvidence::decode(bytes)?)),
            other => Err(EvidenceDecodeError::UnknownMediaType(other.to_owned())),
        }
    }
}

/// Which key signed an SNP report: the chip-unique VCEK or the cloud provider's VLEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigningKeyKind {
    /// Versioned Chip Endorsement Key, signed by the ASK.
    Vcek,
    /// Versioned Loaded Endorsement Key, signed by the ASVK.
    Vlek,
}

impl std::fmt::Display for SigningKeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKeyKind::Vcek => "vcek",
            SigningKeyKind::Vlek => "vlek",
        })
    }
}

/// SEV-SNP evidence: an attestation report and the certificates that endorse its signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpEvidence {
    /// The raw 1184-byte attestation report as the firmware produced it.
    pub report: Vec<u8>,
    /// Whether `vek` is a VCEK or a VLEK.
    pub vek_kind: SigningKeyKind,
    /// DER of the VCEK or VLEK certificate.
    pub vek: Vec<u8>,
    /// DER of the ASK (for a VCEK) or ASVK (for a VLEK), when the platform supplied it.
    pub ask: Option<Vec<u8>>,
    /// DER of the ARK, when the platform supplied it. It must equal a trusted root; it is never trusted by itself.
    pub ark: Option<Vec<u8>>,
}

/// Field tags of the SNP evidence encoding.
mod tag {
    pub const REPORT: u8 = 1;
    pub const VCEK: u8 = 2;
    pub const VLEK: u8 = 3;
    pub const ASK: u8 = 4;
    pub const ASVK: u8 = 5;
    pub const ARK: u8 = 6;
}

/// Upper bound on one field of encoded evidence, to refuse absurd lengths before allocating.
const MAX_FIELD_LEN: usize = 64 * 1024;

impl SnpEvidence {
    /// Encode as a sequence of `tag (1 byte) | length (4 bytes, big-endian) | value` fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.report.len() + self.vek.len() + 4096);
        let mut put = |t: u8, v: &[u8]| {
            out.push(t);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        };
        put(tag::REPORT, &self.report);
        match self.vek_kind {
            SigningKeyKind::Vcek => put(tag::VCEK, &self.vek),
            SigningKeyKind::Vlek => put(tag::VLEK, &self.vek),
        }
        if let Some(ask) = &self.ask {
            let t = match self.vek_kind {
                SigningKeyKind::Vcek => tag::ASK,
                SigningKeyKind::Vlek => tag::ASVK,
            };
            put(t, ask);
        }
        if let Some(ark) = &self.ark {
            put(tag::ARK, ark);
        }
        out
    }

    /// Assemble evidence from a raw report, its VCEK or VLEK certificate and optionally the ASK/ASVK and ARK (DER,
    /// any order). The kind of the endorsement key is read from the report.
    pub fn from_parts(
        report: Vec<u8>,
        vek: Vec<u8>,
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, crate::error::AttestError> {
        crate::snp::evidence_parts::from_parts(report, vek, chain)
    }

    /// Decode the encoding written by [`SnpEvidence::encode`].
    pub fn decode(mut bytes: &[u8]) -> Result<Self, EvidenceDecodeError> {
        let mut report = None;
        let mut vek: Option<(SigningKeyKind, Vec<u8>)> = None;
        let mut ask: Option<(u8, Vec<u8>)> = None;
        let mut ark = None;
        while !bytes.is_empty() {
            if bytes.len() < 5 {
                return Err(EvidenceDecodeError::Truncated);
            }
            let t = bytes[0];
            let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            if len > MAX_FIELD_LEN {
                return Err(EvidenceDecodeError::FieldTooLong { tag: t, len });
            }
            let value = bytes
                .get(5..5 + len)
                .ok_or(EvidenceDecodeError::Truncated)?
                .to_vec();
            bytes = &bytes[5 + len..];
            let dup = match t {
                tag::REPORT => report.replace(value).is_some(),
                tag::VCEK => vek.replace((SigningKeyKind::Vcek, value)).is_some(),
                tag::VLEK => vek.replace((SigningKeyKind::Vlek, value)).is_some(),
                tag::ASK | tag::ASVK => ask.replace((t, value)).is_some(),
                tag::ARK => ark.replace(value).is_some(),
                other => return Err(EvidenceDecodeError::UnknownField(other)),
            };
            if dup {
                return Err(EvidenceDecodeError::DuplicateField(t));
            }
        }
        let report = report.ok_or(EvidenceDecodeError::MissingField("report"))?;
        let (vek_kind, vek) = vek.ok_or(EvidenceDecodeError::MissingField("VCEK or VLEK"))?;
        let ask = match (vek_kind, ask) {
            (_, None) => None,
            (SigningKeyKind::Vcek, Some((tag::ASK, a)))
            | (SigningKeyKind::Vlek, Some((tag::ASVK, a))) => Some(a),
            (SigningKeyKind::Vcek, Some(_)) => {
                return Err(EvidenceDecodeError::Inconsistent(
                    "a VCEK comes with an ASK, not an ASVK",
                ))
            }
            (SigningKeyKind::Vlek, Some(_)) => {
                return Err(EvidenceDecodeError::Inconsistent(
                    "a VLEK comes with an ASVK, not an ASK",
                ))
            }
        };
        Ok(SnpEvidence {
            report,
            vek_kind,
            vek,
            ask,
            ark,
        })
    }
}

/// Why encoded evidence could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceDecodeError {
    /// The media type is not one this crate knows.
    #[error("unknown evidence media type {0:?}")]
    UnknownMediaType(String),
    /// The encoding ends in the middle of a field.
    #[error("evidence encoding is truncated")]
    Truncated,
    /// A field declares an implausible length.
    #[error("evidence field {tag} declares {len} bytes, more than the limit")]
    FieldTooLong {
        /// The field's tag.
        tag: u8,
        /// The declared length.
        len: usize,
    },
    /// A field tag is not defined.
    #[error("unknown evidence field tag {0}")]
    UnknownField(u8),
    /// A field appears twice.
    #[error("evidence field tag {0} appears more than once")]
    DuplicateField(u8),
    /// A required field is absent.
    #[error("evidence lacks its {0}")]
    MissingField(&'static str),
    /// Fields contradict each other.
    #[error("inconsistent evidence: {0}")]
    Inconsistent(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnpEvidence {
        SnpEvidence {
            report: vec![7; 1184],
            vek_kind: SigningKeyKind::Vcek,
            vek: vec![1, 2, 3],
            ask: Some(vec![4, 5]),
            ark: None,
        }
    }

    #[test]
    fn snp_encoding_round_trips() {
        let e = Evidence::Snp(sample());
        let back = Evidence::decode(e.media_type(), &e.encode()).unwrap();
        assert_eq!(back, e);
        let mut vlek = sample();
        vlek.vek_kind = SigningKeyKind::Vlek;
        vlek.ark = Some(vec![9; 10]);
        assert_eq!(SnpEvidence::decode(&vlek.encode()).unwrap(), vlek);
    }

    #[test]
    fn snp_decoding_refuses_malformed_input() {
        let enc = sample().encode();
        assert_eq!(
            SnpEvidence::decode(&enc[..enc.len() - 1]),
            Err(EvidenceDecodeError::Truncated)
        );
        assert_eq!(
            SnpEvidence::decode(&enc[..3]),
            Err(EvidenceDecodeError::Truncated)
        );
        let mut unknown = enc.clone();
        unknown.extend_from_slice(&[42, 0, 0, 0, 0]);
        assert_eq!(
            SnpEvidence::decode(&unknown),
            Err(EvidenceDecodeError::UnknownField(42))
        );
        let mut dup = enc.clone();
        dup.extend_from_slice(&[tag::ASK, 0, 0, 0, 1, 0]);
        assert_eq!(
            SnpEvidence::decode(&dup),
            Err(EvidenceDecodeError::DuplicateField(tag::ASK))
        );
        let huge = [tag::REPORT, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            SnpEvidence::decode(&huge),
            Err(EvidenceDecodeError::FieldTooLong { .. })
        ));
        let no_vek = [tag::REPORT, 0, 0, 0, 1, 0];
        assert_eq!(
            SnpEvidence::decode(&no_vek),
            Err(EvidenceDecodeError::MissingField("VCEK or VLEK"))
        );
        let mixed = [
            tag::REPORT,
            0,
            0,
            0,
            1,
            0,
            tag::VCEK,
            0,
            0,
            0,
            1,
            0,
            tag::ASVK,
            0,
            0,
            0,
            1,
            0,
        ];
        assert!(matches!(
            SnpEvidence::decode(&mixed),
            Err(EvidenceDecodeError::Inconsistent(_))
        ));
        assert!(matches!(
            Evidence::decode("text/plain", &enc),
            Err(EvidenceDecodeError::UnknownMediaType(_))
        ));
    }
}
