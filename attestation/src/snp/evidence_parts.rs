//! Assemble [`SnpEvidence`] from a report and the certificate table the platform returned with it.

use super::cert_table;
use crate::error::AttestError;
use crate::evidence::{SigningKeyKind, SnpEvidence};

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

/// Build evidence from a raw report, its VCEK or VLEK (DER) and any further AMD certificates (DER, any order): the
/// self-issued one is taken as the ARK, another as the ASK/ASVK. The key kind comes from the report.
pub fn from_parts(
    report: Vec<u8>,
    vek: Vec<u8>,
    chain: Vec<Vec<u8>>,
) -> Result<SnpEvidence, AttestError> {
    let vek_kind = report_signing_key(&report)?;
    let (mut ask, mut ark) = (None, None);
    for der in chain {
        let (_, x) = <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<
            '_,
            _,
        >>::from_der(&der)
        .map_err(|e| AttestError::Malformed(format!("chain certificate: {e}")))?;
        let slot = if x.subject().as_raw() == x.issuer().as_raw() {
            &mut ark
        } else {
            &mut ask
        };
        if slot.is_some() {
            return Err(AttestError::Malformed(
                "the chain holds two ARKs or two ASKs".into(),
            ));
        }
        drop(x);
        *slot = Some(der);
    }
    Ok(SnpEvidence {
        report,
        vek_kind,
        vek,
        ask,
        ark,
    })
}
