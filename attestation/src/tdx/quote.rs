//! TDX quotes: the parts of a DCAP quote (versions 4 and 5) that describe the trust domain.
//!
//! Parsing here does not verify anything; [`super::TdxVerifier`] does. The parser exists so that callers can
//! read a quote's measurements (for logs, for `report_data` binding checks, for collateral look-up) with the
//! same field names the verified [`super::TdxClaims`] use.

use dcap_qvl::quote::{Quote, Report};
use serde::{Deserialize, Serialize};

use super::error::TdxError;

/// The TEE type of TDX in a DCAP quote header.
pub const TEE_TYPE_TDX: u32 = 0x81;

/// Length of the DCAP quote header.
pub const HEADER_LEN: usize = 48;

/// Length of a TDX 1.0 TD report body in a quote.
pub const TD_REPORT10_LEN: usize = 584;

/// The quote format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuoteVersion {
    /// DCAP quote v4 (TDX 1.0 report body directly after the header).
    V4,
    /// DCAP quote v5 (typed body: TDX 1.0, TDX 1.5 or TDX 1.5 extended report).
    V5,
}

impl QuoteVersion {
    /// The version number in the quote header.
    pub fn number(self) -> u16 {
        match self {
            QuoteVersion::V4 => 4,
            QuoteVersion::V5 => 5,
        }
    }
}

/// TD attributes (`TDATTRIBUTES`), with the bits a policy decides on broken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdAttributes {
    /// The raw 64-bit value (little-endian in the report).
    pub raw: u64,
    /// The TD is under debug (any bit of the TUD byte: DEBUG or a debug-related bit such as profiling). Its
    /// memory and CPU state are readable by the host, so its evidence means nothing for confidentiality.
    pub debug: bool,
    /// SEPT_VE_DISABLE (bit 28): EPT violations are not converted to #VE, which closes a class of host
    /// attacks on the guest.
    pub sept_ve_disable: bool,
    /// MIGRATABLE (bit 29).
    pub migratable: bool,
}

impl TdAttributes {
    /// Decode the 8 little-endian bytes of `TDATTRIBUTES`.
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        let raw = u64::from_le_bytes(bytes);
        TdAttributes {
            raw,
            debug: bytes[0] != 0,
            sept_ve_disable: raw & (1 << 28) != 0,
            migratable: raw & (1 << 29) != 0,
        }
    }
}

/// The fields of a TD report that describe the trust domain and its TDX module: all of it but REPORTDATA.
/// A parsed [`TdReport`] and the verified [`super::TdxClaims`] both carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdFields {
    /// Quote format version.
    pub quote_version: QuoteVersion,
    /// TEE_TCB_SVN: the TDX module's security version numbers.
    #[serde(with = "crate::hex_serde")]
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module.
    #[serde(with = "crate::hex_serde")]
    pub mr_seam: [u8; 48],
    /// MRTD: measurement of the initial TD contents (firmware).
    #[serde(with = "crate::hex_serde")]
    pub mr_td: [u8; 48],
    /// RTMR0-3: runtime-extendable measurement registers.
    #[serde(with = "crate::hex_serde::rtmrs")]
    pub rtmr: [[u8; 48]; 4],
    /// MRCONFIGID: software-defined configuration id set by the host at TD creation.
    #[serde(with = "crate::hex_serde")]
    pub mr_config_id: [u8; 48],
    /// MROWNER: software-defined id of the TD's owner.
    #[serde(with = "crate::hex_serde")]
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG: software-defined owner configuration.
    #[serde(with = "crate::hex_serde")]
    pub mr_owner_config: [u8; 48],
    /// TD attributes (debug, SEPT_VE_DISABLE, ...).
    pub td_attributes: TdAttributes,
    /// XFAM: extended features available to the TD.
    #[serde(with = "crate::hex_serde")]
    pub xfam: [u8; 8],
}

/// The trust-domain fields of a TDX quote. In JSON the fields of [`TdFields`] stand beside `report_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdReport {
    /// Everything but the report data.
    #[serde(flatten)]
    pub td: TdFields,
    /// REPORTDATA: 64 bytes chosen by the TD (here: the hash binding an RA-TLS key).
    #[serde(with = "crate::hex_serde")]
    pub report_data: [u8; 64],
}

impl TdReport {
    /// Parse the TD fields of a TDX quote without verifying it.
    pub fn parse(quote: &[u8]) -> Result<Self, TdxError> {
        let parsed = Quote::parse(quote).map_err(|e| TdxError::MalformedQuote(format!("{e:#}")))?;
        Self::from_quote(&parsed)
    }

    pub(crate) fn from_quote(quote: &Quote) -> Result<Self, TdxError> {
        let quote_version = match quote.header.version {
            4 => QuoteVersion::V4,
            5 => QuoteVersion::V5,
            other => {
                return Err(TdxError::UnsupportedQuote(format!(
                    "quote version {other} (expected 4 or 5)"
                )))
            }
        };
        if quote.header.tee_type != TEE_TYPE_TDX {
            return Err(TdxError::UnsupportedQuote(format!(
                "TEE type {:#x} is not TDX ({TEE_TYPE_TDX:#x})",
                quote.header.tee_type
            )));
        }
        let body = match &quote.report {
            Report::SgxEnclave(_) => {
                return Err(TdxError::UnsupportedQuote(
                    "the quote carries an SGX enclave report".into(),
                ))
            }
            other => other
                .as_td10()
                .ok_or_else(|| TdxError::UnsupportedQuote("no TD report in the quote".into()))?,
        };
        Ok(TdReport {
            td: TdFields {
                quote_version,
                tee_tcb_svn: body.tee_tcb_svn,
                mr_seam: body.mr_seam,
                mr_td: body.mr_td,
                rtmr: [body.rt_mr0, body.rt_mr1, body.rt_mr2, body.rt_mr3],
                mr_config_id: body.mr_config_id,
                mr_owner: body.mr_owner,
                mr_owner_config: body.mr_owner_config,
                td_attributes: TdAttributes::from_bytes(body.td_attributes),
                xfam: body.xfam,
            },
            report_data: body.report_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::test_support::*;
    use crate::tdx::SimTdReport;

    #[test]
    fn quote_parser_reads_the_fields_without_verifying() {
        let quote = pki()
            .quote(&SimTdReport {
                version: QuoteVersion::V5,
                ..td()
            })
            .unwrap();
        let report = TdReport::parse(&quote).unwrap();
        assert_eq!(report.td.quote_version, QuoteVersion::V5);
        assert_eq!(report.td.mr_config_id, [0x33; 48]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["mr_td"], hex::encode([0x11; 48]));
        assert_eq!(json["rtmr"][3], hex::encode([0x23; 48]));
        let back: TdReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
