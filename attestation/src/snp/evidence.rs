//! SEV-SNP evidence: an attestation report and the AMD certificates that endorse its signing key.
//!
//! Encoding (media type [`SNP_MEDIA_TYPE`]): a sequence of `tag (1 byte) | length (4 bytes, big-endian) | value`
//! fields (`docs/ra-tls.md`). [`SnpEvidence::from_parts`] and [`assemble`] build evidence from what a platform
//! returns: a raw report plus certificates, or a raw report plus the host's certificate table.

use serde::{Deserialize, Serialize};

use super::cert_table;
use crate::error::AttestError;
use crate::evidence::{fields, EvidenceDecodeError};

/// Media type of SEV-SNP evidence (report plus certificates) in a CMW record.
pub const SNP_MEDIA_TYPE: &str = "application/vnd.tee-gateway.sev-snp-evidence.v1";

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
    pub(super) const REPORT: u8 = 1;
    pub(super) const VCEK: u8 = 2;
    pub(super) const VLEK: u8 = 3;
    pub(super) const ASK: u8 = 4;
    pub(super) const ASVK: u8 = 5;
    pub(super) const ARK: u8 = 6;
}

/// Upper bound on one field of encoded evidence, to refuse absurd lengths before allocating.
const MAX_FIELD_LEN: usize = 64 * 1024;

impl SnpEvidence {
    /// Encode as a sequence of `tag (1 byte) | length (4 bytes, big-endian) | value` fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.report.len() + self.vek.len() + 4096);
        let mut put = |t: u8, v: &[u8]| fields::put(&mut out, t, v);
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
    /// any order): the self-issued one is taken as the ARK, another as the ASK/ASVK. The kind of the endorsement key
    /// is read from the report.
    pub fn from_parts(
        report: Vec<u8>,
        vek: Vec<u8>,
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, AttestError> {
        let mut evidence = SnpEvidence {
            vek_kind: report_signing_key(&report)?,
            report,
            vek,
            ask: None,
            ark: None,
        };
        for der in chain {
            let (_, x) =
                <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<
                    '_,
                    _,
                >>::from_der(&der)
                .map_err(|e| AttestError::Malformed(format!("chain certificate: {e}")))?;
            let slot = if x.subject().as_raw() == x.issuer().as_raw() {
                &mut evidence.ark
            } else {
                &mut evidence.ask
            };
            if slot.is_some() {
                return Err(AttestError::Malformed(
                    "the chain holds two ARKs or two ASKs".into(),
                ));
            }
            drop(x);
            *slot = Some(der);
        }
        Ok(evidence)
    }

    /// Decode the encoding written by [`SnpEvidence::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceDecodeError> {
        let mut report = None;
        let mut vek: Option<(SigningKeyKind, Vec<u8>)> = None;
        let mut ask: Option<(u8, Vec<u8>)> = None;
        let mut ark = None;
        fields::decode(bytes, MAX_FIELD_LEN, |t, value| {
            let value = value.to_vec();
            Ok(match t {
                tag::REPORT => report.replace(value).is_some(),
                tag::VCEK => vek.replace((SigningKeyKind::Vcek, value)).is_some(),
                tag::VLEK => vek.replace((SigningKeyKind::Vlek, value)).is_some(),
                tag::ASK | tag::ASVK => ask.replace((t, value)).is_some(),
                tag::ARK => ark.replace(value).is_some(),
                other => return Err(EvidenceDecodeError::UnknownField(other)),
            })
        })?;
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

/// Which key the raw report says signed it (KEY_INFO bits 2-4 at offset 0x48).
pub(crate) fn report_signing_key(report: &[u8]) -> Result<SigningKeyKind, AttestError> {
    let ki = report
        .get(0x48..0x4C)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| {
            AttestError::Malformed(format!("SNP report of {} bytes is too short", report.len()))
        })?;
    match (ki >> 2) & 7 {
        0 => Ok(SigningKeyKind::Vcek),
        1 => Ok(SigningKeyKind::Vlek),
        other => Err(AttestError::Malformed(format!(
            "report names signing key {other}, neither VCEK nor VLEK"
        ))),
    }
}

/// Combine a raw report with the certificate table (may be empty) into evidence.
pub(crate) fn assemble(report: Vec<u8>, table: &[u8]) -> Result<SnpEvidence, AttestError> {
    let kind = report_signing_key(&report)?;
    let entries = if table.is_empty() || table.iter().all(|&b| b == 0) {
        Vec::new()
    } else {
        cert_table::parse(table).map_err(|e| AttestError::Malformed(e.to_string()))?
    };
    let find = |guid: &str| {
        entries
            .iter()
            .find(|(g, _)| g == guid)
            .map(|(_, d)| d.clone())
    };
    let (vek_guid, name) = match kind {
        SigningKeyKind::Vcek => (cert_table::VCEK_GUID, "VCEK"),
        SigningKeyKind::Vlek => (cert_table::VLEK_GUID, "VLEK"),
    };
    let vek = find(vek_guid).ok_or_else(|| {
        AttestError::Unavailable(format!(
            "the report is signed by the {name}, but the host supplied no {name} certificate \
             (the host must install the certificate chain, e.g. with `snphost import`)"
        ))
    })?;
    Ok(SnpEvidence {
        report,
        vek_kind: kind,
        vek,
        ask: find(cert_table::ASK_GUID),
        ark: find(cert_table::ARK_GUID),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Evidence;

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
