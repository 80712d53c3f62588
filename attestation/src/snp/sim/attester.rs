//! [`SimSnpAttester`]: an [`Attester`] signing reports for a fixed simulated guest.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{SimReportRequest, SimSnpPki};
use crate::attester::Attester;
use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;
use crate::sealing::SealingRootError;

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
    /// Whether its guest policy allows a migration agent (MIGRATE_MA).
    pub migrate_ma: bool,
    /// Whether its guest policy allows SMT (default: yes).
    pub smt: bool,
    /// The VM privilege level its reports come from (default 0).
    pub vmpl: u32,
}

impl SimSnpAttester {
    /// A non-debug guest with the given measurement and host data.
    pub fn new(pki: std::sync::Arc<SimSnpPki>, measurement: [u8; 48], host_data: [u8; 32]) -> Self {
        SimSnpAttester {
            pki,
            measurement,
            host_data,
            debug: false,
            migrate_ma: false,
            smt: true,
            vmpl: 0,
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
            migrate_ma: self.migrate_ma,
            smt: self.smt,
            vmpl: self.vmpl,
        })?))
    }

    /// As the firmware's derived key: rooted in the simulated chip's secret (its VCEK key), mixing in the
    /// measurement and the guest-policy bits, so another image or a debuggable guest derives another key.
    fn sealing_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, SealingRootError> {
        let chip_secret = Zeroizing::new(self.pki.vcek_key.to_bytes());
        let hk = Hkdf::<Sha256>::new(Some(b"tee-gateway/sim-snp/derived-key:"), &chip_secret);
        let policy = [
            u8::from(self.debug),
            u8::from(self.migrate_ma),
            u8::from(self.smt),
        ];
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand_multi_info(&[&self.measurement, &policy], key.as_mut())
            .map_err(|e| SealingRootError::Refused(e.to_string()))?;
        Ok(Some(key))
    }
}
