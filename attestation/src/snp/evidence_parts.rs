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
