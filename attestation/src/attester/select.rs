//! Choosing an attester and trust anchors from a configuration: the `[attestation]` backend names a binary's
//! configuration file accepts (`auto`, `tdx`, `sev-snp`, `sim-tdx`, `sim-snp`), the attester each one builds,
//! and the trust anchors for a list of simulated PKI directories.
//!
//! - [`Backend::attester`]: `auto` takes the first real interface [`detect`] finds; `tdx` and `sev-snp` do the
//!   same and refuse a machine that attests as the other platform; `sim-*` load the simulated PKI from a directory
//!   and report a given (hex) measurement: SNP MEASUREMENT or TDX MRTD, all zeros when absent.
//! - [`trust_anchors`]: the vendor roots plus, per directory, the simulated AMD ARK and/or Intel root CA it holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{detect, Attester};
use crate::error::{AttestError, VerifyError};
use crate::platform::Platform;
use crate::verifier::TrustAnchors;

/// Which attester produces one's own evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Detect the platform (configfs-tsm, `/dev/tdx_guest`, `/dev/sev-guest`).
    #[default]
    Auto,
    /// Intel TDX.
    Tdx,
    /// AMD SEV-SNP.
    SevSnp,
    /// Simulated TDX evidence signed by a simulated Intel PKI.
    SimTdx,
    /// Simulated SEV-SNP evidence signed by a simulated AMD PKI.
    SimSnp,
}

/// Why no attester or trust anchors could be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// No attestation interface was found on this machine.
    #[error(transparent)]
    Detect(#[from] AttestError),
    /// The machine attests as another platform than the configured backend.
    #[error("the configured backend is {wanted} but this machine attests as {found}")]
    PlatformMismatch {
        /// The configured platform.
        wanted: Platform,
        /// The platform found.
        found: Platform,
    },
    /// A simulated backend without a simulated PKI directory.
    #[error("{0} needs attestation.sim_pki")]
    MissingSimPki(&'static str),
    /// The simulated PKI could not be loaded.
    #[error("{}: {reason}", dir.display())]
    SimPki {
        /// The directory.
        dir: PathBuf,
        /// Why it could not be loaded.
        reason: String,
    },
    /// The simulated measurement is not 48 bytes of hex.
    #[error("sim_measurement must be 96 hex characters, got {0:?}")]
    Measurement(String),
    /// A trusted simulated-root directory holds no root.
    #[error("{} holds neither {} nor {}", dir.display(), snp.display(), tdx.display())]
    NoSimRoot {
        /// The directory.
        dir: PathBuf,
        /// The SNP root file looked for.
        snp: PathBuf,
        /// The TDX root file looked for.
        tdx: PathBuf,
    },
    /// A simulated root could not be used.
    #[error("{}: {source}", file.display())]
    SimRoot {
        /// The root's file.
        file: PathBuf,
        /// Why it was refused.
        source: VerifyError,
    },
}

impl Backend {
    /// Whether the backend produces simulated evidence.
    pub fn is_simulated(self) -> bool {
        matches!(self, Self::SimTdx | Self::SimSnp)
    }

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tdx => "tdx",
            Self::SevSnp => "sev-snp",
            Self::SimTdx => "sim-tdx",
            Self::SimSnp => "sim-snp",
        }
    }

    /// Builds the attester: a real one found on this machine, or a simulated one signing with the PKI in
    /// `sim_pki` and reporting `sim_measurement` (hex; zeros when absent).
    pub fn attester(
        self,
        sim_pki: Option<&Path>,
        sim_measurement: Option<&str>,
    ) -> Result<Arc<dyn Attester>, SelectError> {
        self.build(sim_pki, || sim_measurement_bytes(sim_measurement))
    }

    /// As [`Self::attester`], with the simulated measurement already parsed.
    pub fn attester_for(
        self,
        sim_pki: Option<&Path>,
        measurement: [u8; 48],
    ) -> Result<Arc<dyn Attester>, SelectError> {
        self.build(sim_pki, || Ok(measurement))
    }

    /// The attester, asking for the simulated measurement once the simulated PKI is loaded.
    fn build(
        self,
        sim_pki: Option<&Path>,
        measurement: impl FnOnce() -> Result<[u8; 48], SelectError>,
    ) -> Result<Arc<dyn Attester>, SelectError> {
        let wanted = match self {
            Self::Auto => return Ok(Arc::from(detect()?)),
            Self::Tdx => Platform::Tdx,
            Self::SevSnp => Platform::SevSnp,
            Self::SimSnp | Self::SimTdx => {
                let dir = sim_pki.ok_or(SelectError::MissingSimPki(self.as_str()))?;
                let pki_err = |reason: String| SelectError::SimPki {
                    dir: dir.to_path_buf(),
                    reason,
                };
                return Ok(if self == Self::SimSnp {
                    let pki =
                        crate::SimSnpPki::load_pem(dir).map_err(|e| pki_err(e.to_string()))?;
                    let measurement = measurement()?;
                    Arc::new(crate::SimSnpAttester::new(
                        Arc::new(pki),
                        measurement,
                        [0; 32],
                    ))
                } else {
                    let pki = crate::SimTdxPki::load(dir).map_err(|e| pki_err(e.to_string()))?;
                    let measurement = measurement()?;
                    let td = crate::SimTdReport {
                        mr_td: measurement,
                        ..Default::default()
                    };
                    Arc::new(crate::SimTdxAttester::new(Arc::new(pki), td))
                });
            }
        };
        let found: Arc<dyn Attester> = Arc::from(detect()?);
        if found.platform() != wanted {
            return Err(SelectError::PlatformMismatch {
                wanted,
                found: found.platform(),
            });
        }
        Ok(found)
    }
}

/// Parses a simulated measurement (SNP MEASUREMENT or TDX MRTD: 96 hex characters; absent: zeros).
pub fn sim_measurement_bytes(hex_text: Option<&str>) -> Result<[u8; 48], SelectError> {
    match hex_text {
        None => Ok([0; 48]),
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| SelectError::Measurement(h.to_string())),
    }
}

/// The files a simulated-root directory may hold: the SNP ARK and the TDX root CA.
pub fn sim_root_files(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join(crate::snp::sim::files::ARK),
        dir.join(crate::tdx::sim::files::ROOT_CA),
    )
}

/// The vendor roots, plus the simulated roots in each directory of `sim_roots` (an SNP ARK, a TDX root CA, or
/// both; a directory with neither is an error). Each simulated root trusted is logged as a warning.
pub fn trust_anchors(sim_roots: &[PathBuf]) -> Result<TrustAnchors, SelectError> {
    let mut anchors = TrustAnchors::production();
    for dir in sim_roots {
        let (snp, tdx) = sim_root_files(dir);
        if !snp.is_file() && !tdx.is_file() {
            return Err(SelectError::NoSimRoot {
                dir: dir.clone(),
                snp,
                tdx,
            });
        }
        anchors = trust_sim_root(anchors, &snp, "AMD", TrustAnchors::with_sim_snp_ark)?;
        anchors = trust_sim_root(anchors, &tdx, "Intel", TrustAnchors::with_sim_tdx_root)?;
    }
    Ok(anchors)
}

/// Add the simulated root in `file` (if it can be read) to `anchors` with `add`; `vendor` names it in the warning.
fn trust_sim_root(
    anchors: TrustAnchors,
    file: &Path,
    vendor: &str,
    add: fn(TrustAnchors, &[u8]) -> Result<TrustAnchors, VerifyError>,
) -> Result<TrustAnchors, SelectError> {
    let Ok(pem) = std::fs::read(file) else {
        return Ok(anchors);
    };
    let anchors = add(anchors, &pem).map_err(|source| SelectError::SimRoot {
        file: file.to_path_buf(),
        source,
    })?;
    tracing::warn!(root = %file.display(), "trusting a SIMULATED {vendor} root");
    Ok(anchors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_measurements_and_missing_inputs() {
        let b: Backend = toml::from_str::<toml::Value>("b = \"sim-snp\"")
            .unwrap()
            .get("b")
            .unwrap()
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(b, Backend::SimSnp);
        assert!(b.is_simulated() && !Backend::SevSnp.is_simulated());
        for b in [
            Backend::Auto,
            Backend::Tdx,
            Backend::SevSnp,
            Backend::SimTdx,
            Backend::SimSnp,
        ] {
            let parsed: Backend = toml::Value::String(b.as_str().into()).try_into().unwrap();
            assert_eq!(parsed, b);
        }
        assert_eq!(sim_measurement_bytes(None).unwrap(), [0; 48]);
        assert_eq!(
            sim_measurement_bytes(Some(&"ab".repeat(48))).unwrap(),
            [0xab; 48]
        );
        for bad in ["ab", "zz".repeat(48).as_str(), &"ab".repeat(49)] {
            let e = sim_measurement_bytes(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("96 hex characters"), "{e}");
        }
        let e = Backend::SimTdx
            .attester(None, None)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(e, "sim-tdx needs attestation.sim_pki");
        let missing = Path::new("/nonexistent/tee-gateway-sim-pki");
        let e = Backend::SimSnp
            .attester(Some(missing), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("/nonexistent/tee-gateway-sim-pki: "), "{e}");
        let e = trust_anchors(&[missing.to_path_buf()])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("holds neither"), "{e}");
    }
}
