//! The TEE platforms whose evidence this crate understands.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A TEE platform, real or simulated.
///
/// Simulated platforms produce evidence in exactly the real formats, signed under a simulated vendor PKI; they are
/// accepted only by a verifier that was explicitly told to trust that simulated root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// Intel TDX, quotes rooted in the Intel SGX Root CA.
    Tdx,
    /// AMD SEV-SNP, reports rooted in AMD's ARK for Milan, Genoa or Turin.
    SevSnp,
    /// Simulated Intel TDX: real quote format, simulated Intel PKI.
    SimTdx,
    /// Simulated AMD SEV-SNP: real report format, simulated AMD PKI.
    SimSnp,
}

impl Platform {
    /// All platforms, in a stable order.
    pub const ALL: [Platform; 4] = [
        Platform::Tdx,
        Platform::SevSnp,
        Platform::SimTdx,
        Platform::SimSnp,
    ];

    /// The platform's name as used in configuration, JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Tdx => "tdx",
            Platform::SevSnp => "sev-snp",
            Platform::SimTdx => "sim-tdx",
            Platform::SimSnp => "sim-snp",
        }
    }

    /// Whether evidence of this platform is produced by a simulator rather than by TEE hardware.
    pub fn is_simulated(self) -> bool {
        matches!(self, Platform::SimTdx | Platform::SimSnp)
    }

    /// The platform family: both `sev-snp` and `sim-snp` are SNP, both `tdx` and `sim-tdx` are TDX.
    pub fn family(self) -> PlatformFamily {
        match self {
            Platform::Tdx | Platform::SimTdx => PlatformFamily::Tdx,
            Platform::SevSnp | Platform::SimSnp => PlatformFamily::Snp,
        }
    }
}

/// The evidence format shared by a real platform and its simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlatformFamily {
    /// Intel TDX quotes.
    Tdx,
    /// AMD SEV-SNP attestation reports.
    Snp,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown platform name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {0:?} (expected one of: tdx, sev-snp, sim-tdx, sim-snp)")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPlatform(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for p in Platform::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), p);
            assert_eq!(p.as_str().parse::<Platform>().unwrap(), p);
        }
        assert!("snp".parse::<Platform>().is_err());
        assert!(serde_json::from_str::<Platform>("\"SevSnp\"").is_err());
    }

    #[test]
    fn simulated_and_family() {
        assert!(Platform::SimSnp.is_simulated());
        assert!(!Platform::SevSnp.is_simulated());
        assert_eq!(Platform::SimSnp.family(), PlatformFamily::Snp);
        assert_eq!(Platform::SimTdx.family(), PlatformFamily::Tdx);
    }
}
