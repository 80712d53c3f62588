//! What a verified TDX quote says: measurements, attributes and the platform's TCB verdict.

use serde::{Deserialize, Serialize};

use super::quote::TdFields;

/// The TCB status Intel's collateral assigns to the platform (merged over the platform, TDX module and QE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TcbStatus {
    /// All components are at the latest TCB level.
    UpToDate,
    /// Up to date, but software hardening is needed (see the advisories).
    SWHardeningNeeded,
    /// Up to date, but the platform configuration needs changing (see the advisories).
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// A component is below the latest TCB level.
    OutOfDate,
    /// Out of date, and the configuration needs changing.
    OutOfDateConfigurationNeeded,
    /// The TD launched on an out-of-date TCB that has since been updated in place: relaunch it.
    TDRelaunchAdvised,
    /// As above, and the configuration needs changing.
    TDRelaunchAdvisedConfigurationNeeded,
    /// The platform's keys are revoked (never accepted).
    Revoked,
}

impl TcbStatus {
    /// Every status, in the order above.
    pub const ALL: [TcbStatus; 9] = [
        TcbStatus::UpToDate,
        TcbStatus::SWHardeningNeeded,
        TcbStatus::ConfigurationNeeded,
        TcbStatus::ConfigurationAndSWHardeningNeeded,
        TcbStatus::OutOfDate,
        TcbStatus::OutOfDateConfigurationNeeded,
        TcbStatus::TDRelaunchAdvised,
        TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        TcbStatus::Revoked,
    ];

    /// The name Intel's collateral uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
            TcbStatus::Revoked => "Revoked",
        }
    }
}

impl std::fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TcbStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TcbStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = TcbStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown TCB status {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// The claims of a verified TDX quote (its report data is returned beside them, see
/// [`super::VerifiedQuote`]). In JSON the fields of [`TdFields`] stand beside the TCB verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxClaims {
    /// The quote's measurements and attributes.
    #[serde(flatten)]
    pub td: TdFields,
    /// The platform's merged TCB status.
    pub tcb_status: TcbStatus,
    /// Intel security advisories that apply to the platform's TCB level.
    pub advisory_ids: Vec<String>,
    /// FMSPC of the platform (from its PCK certificate).
    #[serde(with = "crate::hex_serde")]
    pub fmspc: [u8; 6],
}
