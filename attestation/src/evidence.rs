//! Evidence: what an attester produces and a verifier checks.
//!
//! Each variant is one platform family; real and simulated platforms share a variant because they share the
//! format. Which of the two a piece of evidence is becomes known only once its signature chain has been checked
//! against a trust anchor.
//!
//! Evidence has a compact binary encoding, identified by a media type, that RA-TLS certificates carry inside a CMW
//! record (`docs/ra-tls.md` specifies both).

use crate::platform::PlatformFamily;
pub use crate::snp::{SigningKeyKind, SnpEvidence, SNP_MEDIA_TYPE};
pub use crate::tdx::{TdxEvidence, TDX_MEDIA_TYPE};

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

/// The field encoding that SNP and TDX evidence share: a sequence of `tag (1 byte) | length (4 bytes, big-endian)
/// | value` fields, each tag at most once.
pub(crate) mod fields {
    use super::EvidenceDecodeError;

    /// Append one field to `out`.
    pub(crate) fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }

    /// Hand each field of `bytes` to `take` in order. `take` stores the value and says whether its tag had been
    /// seen already (a [`EvidenceDecodeError::DuplicateField`]). A field longer than `max_len`, or one the bytes
    /// end inside of, is refused before it is read.
    pub(crate) fn decode(
        mut bytes: &[u8],
        max_len: usize,
        mut take: impl FnMut(u8, &[u8]) -> Result<bool, EvidenceDecodeError>,
    ) -> Result<(), EvidenceDecodeError> {
        while !bytes.is_empty() {
            if bytes.len() < 5 {
                return Err(EvidenceDecodeError::Truncated);
            }
            let tag = bytes[0];
            let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            if len > max_len {
                return Err(EvidenceDecodeError::FieldTooLong { tag, len });
            }
            let value = bytes
                .get(5..5 + len)
                .ok_or(EvidenceDecodeError::Truncated)?;
            bytes = &bytes[5 + len..];
            if take(tag, value)? {
                return Err(EvidenceDecodeError::DuplicateField(tag));
            }
        }
        Ok(())
    }
}
