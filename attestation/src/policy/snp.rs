//! SEV-SNP profiles.
//!
//! ```toml
//! [[apps.deadbeef11111111.profile]]
//! platform = "sev-snp"                   # or "sim-snp"
//! measurement = "<96 hex digits>"        # required
//! host_data = "<64 hex digits>"          # optional: any host data when absent
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }   # optional: see below
//! signing_keys = ["vcek"]                # optional: default both "vcek" and "vlek"
//! max_vmpl = 0                           # optional: default 0
//! allow_migration_agent = false          # optional: default false
//! allow_smt = true                       # optional: default true
//! allow_debug = false                    # optional: default false
//! ```
//!
//! Without `min_tcb` the REPORTED_TCB must meet the default floor of the report's processor generation
//! ([`MinTcb::default_for`]); an explicit `min_tcb` replaces it, and components it leaves out are 0, so
//! `min_tcb = {}` accepts any TCB. The guest policy of the report is checked too: DEBUG (bit 19) unless
//! `allow_debug`, MIGRATE_MA (bit 18) unless `allow_migration_agent`, and with `allow_smt = false` the SMT bit
//! (16) must be clear, so that the guest was launched on a host that runs it without simultaneous multithreading.

use serde::{Deserialize, Deserializer, Serialize};

use super::{join_names, Violation};
use crate::claims::{Claims, PlatformClaims, SnpProduct, SnpTcb};
use crate::evidence::SigningKeyKind;

/// Guest policy bit SMT: the guest may run with simultaneous multithreading enabled.
pub const GUEST_POLICY_SMT: u64 = 1 << 16;
/// Guest policy bit MIGRATE_MA: a migration agent may be associated with the guest.
pub const GUEST_POLICY_MIGRATE_MA: u64 = 1 << 18;
/// Guest policy bit DEBUG: the host may debug the guest (read and write its memory).
pub const GUEST_POLICY_DEBUG: u64 = 1 << 19;

/// The highest VM privilege level.
const HIGHEST_VMPL: u32 = 3;

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
    /// The minimum REPORTED_TCB; the product's default floor ([`MinTcb::default_for`]) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<MinTcb>,
    /// The key kinds allowed to sign the report (default: both).
    #[serde(default = "both_keys")]
    pub signing_keys: Vec<SigningKeyKind>,
    /// The highest VMPL the report may come from (0 to 3, default 0: only the most privileged level, where a
    /// guest without an SVSM runs its kernel).
    #[serde(default, deserialize_with = "vmpl")]
    pub max_vmpl: u32,
    /// Whether a guest whose policy allows a migration agent (MIGRATE_MA) is acceptable (default: no).
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// Whether a guest whose policy allows SMT is acceptable (default: yes); `false` requires the SMT bit clear.
    #[serde(default = "yes")]
    pub allow_smt: bool,
    /// Whether a debuggable guest is acceptable (default: no).
    #[serde(default)]
    pub allow_debug: bool,
}

/// Minimum TCB components; components left out of an explicit `min_tcb` are 0 (unconstrained).
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

/// The default floor for Milan: bootloader 2, TEE 0, SNP 5, microcode 68. Every Milan report the project tests
/// against (the real samples, of 2022 and 2023 firmware, and the simulated chip) meets it; firmware older than
/// that is refused unless a profile lowers `min_tcb` explicitly.
pub const MILAN_MIN_TCB: MinTcb = MinTcb {
    bootloader: 2,
    tee: 0,
    snp: 5,
    microcode: 68,
    fmc: 0,
};

impl MinTcb {
    /// The floor applied when a profile has no `min_tcb`, per processor generation. Security version numbers
    /// are numbered per generation, so one floor cannot serve all: Milan has [`MILAN_MIN_TCB`]; Genoa and Turin
    /// have no built-in floor (0 everywhere), and profiles for them should set `min_tcb`.
    pub fn default_for(product: SnpProduct) -> MinTcb {
        match product {
            SnpProduct::Milan => MILAN_MIN_TCB,
            SnpProduct::Genoa | SnpProduct::Turin => MinTcb::default(),
        }
    }
}

fn both_keys() -> Vec<SigningKeyKind> {
    vec![SigningKeyKind::Vcek, SigningKeyKind::Vlek]
}

fn yes() -> bool {
    true
}

fn vmpl<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let level = u32::deserialize(d)?;
    if level > HIGHEST_VMPL {
        return Err(serde::de::Error::custom(format!(
            "max_vmpl {level} is not a VM privilege level (0 to {HIGHEST_VMPL})"
        )));
    }
    Ok(level)
}

impl SnpProfile {
    /// A profile accepting exactly this measurement, any host data, the default TCB floor, either key, VMPL 0,
    /// SMT, no migration agent, no debug.
    pub fn with_measurement(measurement: [u8; 48]) -> Self {
        SnpProfile {
            measurement,
            host_data: None,
            min_tcb: None,
            signing_keys: both_keys(),
            max_vmpl: 0,
            allow_migration_agent: false,
            allow_smt: true,
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
        if snp.guest_policy & GUEST_POLICY_MIGRATE_MA != 0 && !self.allow_migration_agent {
            return Err(Violation::MigrationAgent {
                guest_policy: snp.guest_policy,
            });
        }
        if snp.guest_policy & GUEST_POLICY_SMT != 0 && !self.allow_smt {
            return Err(Violation::Smt {
                guest_policy: snp.guest_policy,
            });
        }
        if snp.vmpl > self.max_vmpl {
            return Err(Violation::Vmpl {
                maximum: self.max_vmpl,
                actual: snp.vmpl,
            });
        }
        if !self.signing_keys.contains(&snp.signing_key) {
            return Err(Violation::SigningKey {
                actual: snp.signing_key.to_string(),
                allowed: join_names(&self.signing_keys),
            });
        }
        match &self.min_tcb {
            Some(min) => check_tcb(min, &snp.reported_tcb, false),
            None => check_tcb(&MinTcb::default_for(snp.product), &snp.reported_tcb, true),
        }
    }
}

fn check_tcb(min: &MinTcb, tcb: &SnpTcb, default_floor: bool) -> Result<(), Violation> {
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
                default_floor,
            });
        }
    }
    Ok(())
}
