//! SEV-SNP profiles.

use serde::{Deserialize, Serialize};

use super::{join_names, Violation};
use crate::claims::{Claims, PlatformClaims, SnpTcb};
use crate::evidence::SigningKeyKind;

/// An acceptable SEV-SNP guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpProfile {
    /// The launch measurement (48 bytes, hex).
    #[serde(with = "crate::hex_serde")]
    pub measurement: [u8; 48],
    /// HOST_DATA (32 bytes, hex); any value when absent.
    #[serde(
        default,
        with = "crate::hex_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub host_data: Option<[u8; 32]>,
    /// The minimum REPORTED_TCB; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<MinTcb>,
    /// The key kinds allowed to sign the report (default: both).
    #[serde(default = "both_keys")]
    pub signing_keys: Vec<SigningKeyKind>,
    /// Whether a debuggable guest is acceptable (default: no).
    #[serde(default)]
    pub allow_debug: bool,
}

/// Minimum TCB components; absent components are unconstrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// Minimum bootloader SPL.
    #[serde(default)]
    pub bootloader: u8,
    /// Minimum TEE SPL.
    #[serde(default)]
    pub tee: u8,
    /// Minimum SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Minimum microcode SPL.
    #[serde(default)]
    pub microcode: u8,
    /// Minimum FMC SPL (Turin); reports without FMC fail a non-zero minimum.
    #[serde(default)]
    pub fmc: u8,
}

fn both_keys() -> Vec<SigningKeyKind> {
    vec![SigningKeyKind::Vcek, SigningKeyKind::Vlek]
}

impl SnpProfile {
    /// A profile accepting exactly this measurement, any host data and TCB, either key, no debug.
    pub fn with_measurement(measurement: [u8; 48]) -> Self {
        SnpProfile {
            measurement,
            host_data: None,
            min_tcb: None,
            signing_keys: both_keys(),
            allow_debug: false,
        }
    }

    /// Check SNP claims against the profile.
    pub fn check(&self, claims: &Claims) -> Result<(), Violation> {
        #[allow(unreachable_patterns)]
        let snp = match &claims.details {
            PlatformClaims::Snp(snp) => snp,
            _ => {
                return Err(Violation::Mismatch {
                    field: "evidence kind",
                    expected: "snp".into(),
                    actual: "other".into(),
                })
            }
        };
        if snp.measurement != self.measurement {
            return Err(Violation::Mismatch {
                field: "measurement",
                expected: hex::encode(self.measurement),
                actual: hex::encode(snp.measurement),
            });
        }
        if let Some(hd) = &self.host_data {
            if *hd != snp.host_data {
                return Err(Violation::Mismatch {
                    field: "host_data",
                    expected: hex::encode(hd),
                    actual: hex::encode(snp.host_data),
                });
            }
        }
        if claims.debug && !self.allow_debug {
            return Err(Violation::Debug);
        }
        if !self.signing_keys.contains(&snp.signing_key) {
            return Err(Violation::SigningKey {
                actual: snp.signing_key.to_string(),
                allowed: join_names(&self.signing_keys),
            });
        }
        if let Some(min) = &self.min_tcb {
            check_tcb(min, &snp.reported_tcb)?;
        }
        Ok(())
    }
}

fn check_tcb(min: &MinTcb, tcb: &SnpTcb) -> Result<(), Violation> {
    let parts = [
        ("bootloader", min.bootloader, tcb.bootloader),
        ("tee", min.tee, tcb.tee),
        ("snp", min.snp, tcb.snp),
        ("microcode", min.microcode, tcb.microcode),
        ("fmc", min.fmc, tcb.fmc.unwrap_or(0)),
    ];
    for (component, minimum, actual) in parts {
        if actual < minimum {
            return Err(Violation::TcbTooLow {
                component,
                minimum,
                actual,
            });
        }
    }
    Ok(())
}
