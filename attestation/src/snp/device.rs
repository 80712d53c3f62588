//! SEV-SNP reports from inside a guest through `/dev/sev-guest` (the `sev` crate): the interface of kernels without
//! configfs-tsm (which [`crate::attester::ConfigfsTsm`] handles with provider `sev_guest`).

use std::sync::Mutex;

use zeroize::Zeroizing;

use super::{cert_table, evidence};
use crate::attester::Attester;
use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;
use crate::sealing::SealingRootError;

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

/// The SEV-SNP derived key of this guest: rooted in the chip's VCEK, mixing in the launch measurement and the guest
/// policy (so another image, or a debuggable launch, derives another key), at VMPL 0.
pub(crate) fn derived_key(
    fw: &mut sev::firmware::guest::Firmware,
) -> Result<Zeroizing<[u8; 32]>, SealingRootError> {
    use sev::firmware::guest::{DerivedKey, GuestFieldSelect};
    let mut fields = GuestFieldSelect::default();
    fields.set_guest_policy(true);
    fields.set_measurement(true);
    let request = DerivedKey::new(false, fields, 0, 0, 0, None);
    let key = fw
        .get_derived_key(Some(1), request)
        .map_err(|e| SealingRootError::Refused(e.to_string()))?;
    Ok(Zeroizing::new(key))
}

/// Opens `/dev/sev-guest` and asks for [`derived_key`].
pub(crate) fn open_and_derive_key() -> Result<Zeroizing<[u8; 32]>, SealingRootError> {
    let mut fw = sev::firmware::guest::Firmware::open().map_err(|e| SealingRootError::Device {
        device: "/dev/sev-guest",
        reason: e.to_string(),
    })?;
    derived_key(&mut fw)
}

impl Attester for SevGuestDevice {
    fn platform(&self) -> Platform {
        Platform::SevSnp
    }

    fn sealing_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, SealingRootError> {
        let mut fw = self.fw.lock().map_err(|_| SealingRootError::Device {
            device: "/dev/sev-guest",
            reason: "device lock poisoned".into(),
        })?;
        derived_key(&mut fw).map(Some)
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
