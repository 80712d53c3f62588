//! Intel TDX evidence: quotes, their verification through `dcap-qvl`, collateral, and simulated TDX.
//!
//! - [`evidence`]: [`TdxEvidence`] (quote plus optional collateral) and its encoding.
//! - [`claims`]: [`TdxClaims`], what a verified quote says.
//! - [`verify`]: [`TdxVerifier`], which checks a quote against collateral at a given time and a trusted root
//!   (Intel's SGX Root CA, or a simulated root when explicitly configured); the quote's fields ([`quote`]) and
//!   the collateral it is checked against ([`collateral`]: [`Collateral`], and [`CollateralSource`] with its
//!   memory cache, collateral directory and, with the `pccs` feature, PCCS/PCS client `pcs`).
//! - [`device`]: quote generation inside a TD through `/dev/tdx_guest`, the fallback for kernels without
//!   configfs-tsm (which [`crate::attester::ConfigfsTsm`] handles with provider `tdx_guest`).
//! - [`sim`]: the simulated Intel PKI, collateral and quote builder (`sim-tdx`).

pub mod claims;
pub mod collateral;
pub mod device;
pub mod error;
pub mod evidence;
pub(crate) mod evidence_verifier;
#[cfg(feature = "pccs")]
pub mod pcs;
pub mod quote;
pub mod sim;
pub mod verify;

pub use claims::{TcbStatus, TdxClaims};
pub use collateral::{
    Collateral, CollateralConfig, CollateralKey, CollateralSource, ValidityWindow,
};
pub use error::{SignedPart, TdxError};
pub use evidence::{TdxEvidence, TDX_MEDIA_TYPE};
pub use quote::{QuoteVersion, TdAttributes, TdFields, TdReport};
pub use sim::{SimTdReport, SimTdxAttester, SimTdxPki};
pub use verify::{intel_root_ca_der, TdxVerifier, VerifiedQuote, INTEL_SGX_ROOT_CA_DER};

#[cfg(test)]
pub(crate) mod test_support;
