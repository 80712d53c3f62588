//! AMD SEV-SNP evidence: reports, their verification, and simulated SEV-SNP.
//!
//! - [`evidence`]: [`SnpEvidence`] (report plus certificates) and its encoding.
//! - [`claims`]: [`SnpClaims`], what a verified report says.
//! - [`verify`]: the SNP verifier: the AMD certificate chain ([`cert`], [`roots`]) and the report ([`report`]).
//! - [`device`]: reports from inside a guest through `/dev/sev-guest`, the fallback for kernels without
//!   configfs-tsm (which [`crate::attester::ConfigfsTsm`] handles with provider `sev_guest`).
//! - [`sim`]: the simulated AMD PKI and report signer (`sim-snp`).

pub(crate) mod cert;
pub(crate) mod cert_table;
pub mod claims;
pub mod device;
pub mod evidence;
pub(crate) mod report;
pub(crate) mod roots;
pub mod sim;
pub(crate) mod verify;

pub use claims::{SnpClaims, SnpProduct, SnpTcb};
pub use device::SevGuestDevice;
pub use evidence::{SigningKeyKind, SnpEvidence, SNP_MEDIA_TYPE};
pub use sim::{SimReportRequest, SimSnpAttester, SimSnpPki};
pub(crate) use verify::SnpVerifier;
