//! TDX evidence: a quote, optionally with the collateral to verify it.
//!
//! Encoding (media type [`TDX_MEDIA_TYPE`]): a sequence of `tag (1 byte) | length (4 bytes, big-endian) |
//! value` fields; tag 1 is the DCAP quote (required), tag 2 the collateral as `QuoteCollateralV3` JSON
//! (optional). Collateral is signed by Intel (or the simulated Intel PKI), so carrying it beside the quote adds
//! no trust; it saves the verifier a PCCS round trip.

use std::path::Path;

use crate::evidence::{fields, EvidenceDecodeError};

use super::collateral::Collateral;
use super::error::TdxError;
use super::quote::TdReport;

/// Media type of TDX evidence in a CMW record.
pub const TDX_MEDIA_TYPE: &str = "application/vnd.tee-gateway.tdx-evidence.v1";

const TAG_QUOTE: u8 = 1;
const TAG_COLLATERAL: u8 = 2;
/// Upper bound on one field, to refuse absurd lengths before allocating.
const MAX_FIELD_LEN: usize = 256 * 1024;

/// A TDX quote and, optionally, its collateral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxEvidence {
    /// The DCAP quote (v4 or v5) as the quoting enclave produced it.
    pub quote: Vec<u8>,
    /// Collateral to verify it with; when absent the verifier's collateral source provides it.
    pub collateral: Option<Collateral>,
}

impl TdxEvidence {
    /// Read a raw quote file and, optionally, a collateral JSON file (what `--format tdx-quote` and
    /// `--collateral` of the verify command name).
    pub fn from_files(quote: &Path, collateral: Option<&Path>) -> Result<Self, TdxError> {
        let quote_bytes = std::fs::read(quote).map_err(|e| TdxError::io("reading", quote, e))?;
        // Refuse what is not a TDX quote here, with the file's name, rather than at verification.
        TdReport::parse(&quote_bytes).map_err(|e| match e {
            TdxError::MalformedQuote(m) => {
                TdxError::MalformedQuote(format!("{}: {m}", quote.display()))
            }
            TdxError::UnsupportedQuote(m) => {
                TdxError::UnsupportedQuote(format!("{}: {m}", quote.display()))
            }
            other => other,
        })?;
        Ok(TdxEvidence {
            quote: quote_bytes,
            collateral: collateral.map(Collateral::load).transpose()?,
        })
    }

    /// Encode as tagged fields.
    pub fn encode(&self) -> Vec<u8> {
        let collateral = self.collateral.as_ref().map(|c| c.to_json());
        let mut out =
            Vec::with_capacity(self.quote.len() + collateral.as_ref().map_or(0, Vec::len) + 10);
        fields::put(&mut out, TAG_QUOTE, &self.quote);
        if let Some(c) = &collateral {
            fields::put(&mut out, TAG_COLLATERAL, c);
        }
        out
    }

    /// Decode the encoding written by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceDecodeError> {
        let (mut quote, mut collateral) = (None, None);
        fields::decode(bytes, MAX_FIELD_LEN, |tag, value| match tag {
            TAG_QUOTE => Ok(quote.replace(value.to_vec()).is_some()),
            TAG_COLLATERAL => {
                let parsed = Collateral::from_json(value).map_err(|_| {
                    EvidenceDecodeError::Inconsistent(
                        "the TDX collateral field is not valid collateral JSON",
                    )
                })?;
                Ok(collateral.replace(parsed).is_some())
            }
            other => Err(EvidenceDecodeError::UnknownField(other)),
        })?;
        Ok(TdxEvidence {
            quote: quote.ok_or(EvidenceDecodeError::MissingField("TDX quote"))?,
            collateral,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn evidence_from_files() {
        let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/tdx");
        let ev = TdxEvidence::from_files(
            &data.join("tdx_quote"),
            Some(&data.join("tdx_quote_collateral.json")),
        )
        .unwrap();
        assert!(ev.collateral.is_some());
        assert!(TdxEvidence::from_files(&data.join("tdx_quote"), None)
            .unwrap()
            .collateral
            .is_none());
        // A collateral file given as the quote, a missing file, a quote given as collateral.
        let err =
            TdxEvidence::from_files(&data.join("tdx_quote_collateral.json"), None).unwrap_err();
        assert!(
            matches!(
                err,
                TdxError::MalformedQuote(_) | TdxError::UnsupportedQuote(_)
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("tdx_quote_collateral.json"),
            "{err}"
        );
        assert!(matches!(
            TdxEvidence::from_files(&data.join("missing"), None),
            Err(TdxError::Io { .. })
        ));
        let err = TdxEvidence::from_files(&data.join("tdx_quote"), Some(&data.join("tdx_quote")))
            .unwrap_err();
        assert!(matches!(err, TdxError::MalformedCollateral(_)), "{err}");
    }

    #[test]
    fn encoding_round_trips_and_refuses_malformed_input() {
        let pki = super::super::SimTdxPki::from_seed(b"evidence encoding").unwrap();
        let with = TdxEvidence {
            quote: pki.quote(&Default::default()).unwrap(),
            collateral: Some(pki.collateral(SystemTime::now()).unwrap()),
        };
        assert_eq!(TdxEvidence::decode(&with.encode()).unwrap(), with);
        let without = TdxEvidence {
            quote: vec![1, 2, 3],
            collateral: None,
        };
        let enc = without.encode();
        assert_eq!(TdxEvidence::decode(&enc).unwrap(), without);
        assert_eq!(
            TdxEvidence::decode(&enc[..enc.len() - 1]),
            Err(EvidenceDecodeError::Truncated)
        );
        assert_eq!(
            TdxEvidence::decode(&[]),
            Err(EvidenceDecodeError::MissingField("TDX quote"))
        );
        let mut dup = enc.clone();
        dup.extend_from_slice(&enc);
        assert_eq!(
            TdxEvidence::decode(&dup),
            Err(EvidenceDecodeError::DuplicateField(TAG_QUOTE))
        );
        let bad_collateral = [
            TAG_QUOTE,
            0,
            0,
            0,
            0,
            TAG_COLLATERAL,
            0,
            0,
            0,
            2,
            b'{',
            b'}',
        ];
        assert!(matches!(
            TdxEvidence::decode(&bad_collateral),
            Err(EvidenceDecodeError::Inconsistent(_))
        ));
        assert_eq!(
            TdxEvidence::decode(&[9, 0, 0, 0, 0]),
            Err(EvidenceDecodeError::UnknownField(9))
        );
        assert!(matches!(
            TdxEvidence::decode(&[TAG_QUOTE, 0xff, 0xff, 0xff, 0xff]),
            Err(EvidenceDecodeError::FieldTooLong { .. })
        ));
    }
}
