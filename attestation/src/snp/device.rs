//! SEV-SNP reports from inside a guest through `/dev/sev-guest` (the `sev` crate): the interface of kernels without
//! configfs-tsm (which [`crate::attester::ConfigfsTsm`] handles with provider `sev_guest`).

use std::sync::Mutex;

use super::{cert_table, evidence};
use crate::attester::Attester;
use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;

/// Attester over `/dev/sev-guest` (extended report: report plus the host's certificate table).
pub struct SevGuestDevice {
    fw: Mutex<sev::firmware::guest::Firmware>,
}

impl std::fmt::Debug for SevGuestDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SevGuestDevice")
    }
}

impl SevGuestDevice {
    /// Open `/dev/sev-guest`.
    pub fn open() -> Result<Self, AttestError> {
        let fw = sev::firmware::guest::Firmware::open()
            .map_err(|e| AttestError::Unavailable(format!("/dev/sev-guest: {e}")))?;
        Ok(SevGuestDevice { fw: Mutex::new(fw) })
    }
}

impl Attester for SevGuestDevice {
    fn platform(&self) -> Platform {
        Platform::SevSnp
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        let mut fw = self
            .fw
            .lock()
            .map_err(|_| AttestError::Device("device lock poisoned".into()))?;
        let (report, certs) = fw
            .get_ext_report(None, Some(*report_data.as_bytes()), Some(0))
            .map_err(|e| AttestError::Device(e.to_string()))?;
        let entries: Vec<(String, Vec<u8>)> = certs
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.guid_string(), c.data))
            .collect();
        let borrowed: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(g, d)| (g.as_str(), d.as_slice()))
            .collect();
        let table = cert_table::build(&borrowed);
        Ok(Evidence::Snp(evidence::assemble(report, &table)?))
    }
}
