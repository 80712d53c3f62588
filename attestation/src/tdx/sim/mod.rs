//! Simulated TDX (`sim-tdx`): a simulated Intel PKI and quotes signed under it, for machines without TDX.
//!
//! Everything is derived from a seed: the keys of a root CA, a PCK platform CA, a PCK certificate (carrying the
//! SGX extensions `dcap-qvl` reads: PPID, TCB components, PCESVN, CPUSVN, PCE-ID, FMSPC, SGX type), a TCB
//! signing certificate, the quoting enclave's attestation key and identity. Certificates and signatures are
//! deterministic (RFC 6979 ECDSA), so the same seed always yields the same PKI. [`SimTdxPki::collateral`]
//! produces signed TCB info, QE identity and both CRLs for a given time; [`SimTdxPki::quote`] produces v4 or
//! v5 quotes whose QE report is signed by the PCK key and whose TD report is signed by the attestation key.
//!
//! This evidence is cryptographically real and is checked by the same verifier as real quotes; it is
//! accepted only by a [`super::TdxVerifier`] built with [`SimTdxPki::root_der`] as its root.
//!
//! - [`pki`]: the keys and certificates ([`SimTdxPki`]) and its directory ([`files`]);
//! - [`collateral`]: signed TCB info, QE identity and CRLs ([`SimCollateralOptions`]);
//! - [`quote`]: v4 and v5 quotes over a [`SimTdReport`];
//! - [`attester`]: [`SimTdxAttester`], an [`crate::Attester`] for a fixed TD.

pub mod attester;
pub mod collateral;
pub mod pki;
pub mod quote;

pub use attester::SimTdxAttester;
pub use collateral::SimCollateralOptions;
pub use pki::{files, SimTdxPki};
pub use quote::SimTdReport;

/// The FMSPC of the simulated platform.
pub const SIM_FMSPC: [u8; 6] = [0x5e, 0x51, 0x70, 0x00, 0x00, 0x00];
/// The PCE SVN of the simulated platform.
pub const SIM_PCE_SVN: u16 = 13;
/// The CPU SVN of the simulated platform.
pub const SIM_CPU_SVN: [u8; 16] = [4, 4, 2, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0];
/// TEE_TCB_SVN of a TDX module at the simulated platform's latest (`UpToDate`) TCB level.
pub const SIM_TEE_TCB_SVN_UP_TO_DATE: [u8; 16] = [5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// TEE_TCB_SVN of a TDX module at the simulated platform's older (`OutOfDate`) TCB level.
pub const SIM_TEE_TCB_SVN_OUT_OF_DATE: [u8; 16] = [3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// The advisory attached to the simulated `OutOfDate` level.
pub const SIM_ADVISORY: &str = "INTEL-SA-SIM-0001";
/// The organization name in every simulated Intel certificate, which marks it as simulated.
pub const SIM_ORGANIZATION: &str = "tee-gateway simulated Intel PKI";
/// TD attribute bit SEPT_VE_DISABLE.
pub const TD_ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;
/// TD attribute bit DEBUG.
pub const TD_ATTR_DEBUG: u64 = 1;

pub(crate) const QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07,
];
pub(crate) const QE_ISV_PROD_ID: u16 = 2;
pub(crate) const QE_ISV_SVN: u16 = 4;
pub(crate) const QE_SVN_IN_HEADER: u16 = 4;
pub(crate) const QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
pub(crate) const SEED_LABEL: &[u8] = b"tee-gateway/sim-tdx/v1:";

#[cfg(test)]
mod tests;
