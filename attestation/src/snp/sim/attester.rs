//! [`SimSnpAttester`]: an [`Attester`] signing reports for a fixed simulated guest.

use super::{SimReportRequest, SimSnpPki};
use crate::attester::Attester;
use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;

/// An [`Attester`] producing `sim-snp` evidence for a fixed guest.
#[derive(Debug, Clone)]
pub struct SimSnpAttester {
    pki: std::sync::Arc<SimSnpPki>,
    /// The measurement every report carries.
    pub measurement: [u8; 48],
    /// The host data every report carries.
    pub host_data: [u8; 32],
    /// Whether the simulated guest is debuggable.
    pub debug: bool,
}

impl SimSnpAttester {
    /// A non-debug guest with the given measurement and host data.
    pub fn new(pki: std::sync::Arc<SimSnpPki>, measurement: [u8; 48], host_data: [u8; 32]) -> Self {
        SimSnpAttester {
            pki,
            measurement,
            host_data,
            debug: false,
        }
    }
}

impl Attester for SimSnpAttester {
    fn platform(&self) -> Platform {
        Platform::SimSnp
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        Ok(Evidence::Snp(self.pki.evidence(&SimReportRequest {
            report_data: *report_data.as_bytes(),
            measurement: self.measurement,
            host_data: self.host_data,
            guest_svn: 0,
            debug: self.debug,
        })?))
    }
}
