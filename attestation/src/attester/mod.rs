//! Attesters: produce evidence carrying 64 bytes of report data, always made for one
//! [`Purpose`](crate::binding::Purpose) (see [`crate::binding`]): no attester is asked for evidence over bytes a caller chose.
//!
//! - [`ConfigfsTsm`]: the kernel's configfs-tsm report interface (`/sys/kernel/config/tsm/report`), provider-
//!   independent, preferred on Linux 6.7 and later;
//! - [`TdxGuestDevice`]: `/dev/tdx_guest` ioctls (TDREPORT, then GetQuote), for older TDX kernels;
//! - [`SevGuestDevice`]: `/dev/sev-guest` through the `sev` crate, for older kernels;
//! - [`crate::SimTdxAttester`]: simulated TDX under a simulated Intel PKI;
//! - [`crate::SimSnpAttester`]: simulated SEV-SNP under a simulated AMD PKI.
//!
//! [`detect`] picks the first real interface present; [`select`] builds the attester and trust anchors a
//! configuration's `[attestation]` section names.

mod configfs_tsm;
pub mod select;

pub use crate::snp::device::SevGuestDevice;
pub use crate::tdx::device::TdxGuestDevice;
pub use configfs_tsm::{ConfigfsTsm, TsmProvider, DEFAULT_TSM_ROOT};
pub use select::{Backend, SelectError};

use zeroize::Zeroizing;

use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;
use crate::sealing::SealingRootError;

/// Something that can produce evidence.
pub trait Attester: Send + Sync {
    /// The platform whose evidence this attester produces.
    fn platform(&self) -> Platform;

    /// Produce evidence whose report data is `report_data` (SHA-512 of a purpose's label and a payload; raw bytes
    /// are never attested).
    fn attest(&self, report_data: &ReportData) -> Result<Evidence, AttestError>;

    /// The platform's sealing key for this TEE (see [`crate::sealing`]), or `None` where the platform has none
    /// (TDX without a key service), so that a sealer falls back to memory-only by design, not by accident.
    fn sealing_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, SealingRootError> {
        Ok(None)
    }
}

/// Find the attestation interface of this machine: configfs-tsm first, then `/dev/tdx_guest`, then
/// `/dev/sev-guest`.
pub fn detect() -> Result<Box<dyn Attester>, AttestError> {
    let mut tried = Vec::new();
    match ConfigfsTsm::open(DEFAULT_TSM_ROOT) {
        Ok(a) => return Ok(Box::new(a)),
        Err(e) => tried.push(format!("configfs-tsm: {e}")),
    }
    match TdxGuestDevice::open() {
        Ok(a) => return Ok(Box::new(a)),
        Err(e) => tried.push(format!("/dev/tdx_guest: {e}")),
    }
    match SevGuestDevice::open() {
        Ok(a) => return Ok(Box::new(a)),
        Err(e) => tried.push(format!("/dev/sev-guest: {e}")),
    }
    Err(AttestError::Unavailable(tried.join("; ")))
}
