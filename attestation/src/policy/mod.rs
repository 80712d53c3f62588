//! The policy engine: which verified claims are acceptable.
//!
//! Policies are TOML files. An [`AppPolicy`] lists, per app id, the profiles an instance of the app may match; a
//! [`GatewayPolicy`] lists the profiles an acceptable gateway may match. A profile is tagged by its platform, and
//! unknown keys anywhere are an error. Parsing ([`AppPolicy::from_toml`]) is separate from matching
//! ([`AppPolicy::check`]); [`PolicyFile`] re-reads a file on demand so the owner can hot-reload it.
//!
//! ```toml
//! [[apps.deadbeef11111111.profile]]
//! platform = "sev-snp"
//! measurement = "<96 hex digits>"
//! ```
//!
//! SEV-SNP profiles (`platform = "sev-snp"` or `"sim-snp"`) are described in [`SnpProfile`], TDX profiles
//! (`platform = "tdx"` or `"sim-tdx"`, which must pin RTMR0-2 or say `"any"` for each) in [`TdxProfile`].

mod file;
mod snp;
mod tdx;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::claims::Claims;
use crate::platform::Platform;

pub use file::{read_policy, PolicyFile, PolicyLoadError, Reload};
pub use snp::{
    MinTcb, SnpProfile, GUEST_POLICY_DEBUG, GUEST_POLICY_MIGRATE_MA, GUEST_POLICY_SMT,
    MILAN_MIN_TCB,
};
pub use tdx::{Pin, TdxProfile};

/// One acceptable configuration of a TEE, tagged by platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Profile {
    /// Real SEV-SNP.
    SevSnp(SnpProfile),
    /// Simulated SEV-SNP.
    SimSnp(SnpProfile),
    /// Real Intel TDX.
    Tdx(TdxProfile),
    /// Simulated Intel TDX.
    SimTdx(TdxProfile),
}

impl Profile {
    /// The platform this profile accepts.
    pub fn platform(&self) -> Platform {
        match self {
            Profile::SevSnp(_) => Platform::SevSnp,
            Profile::SimSnp(_) => Platform::SimSnp,
            Profile::Tdx(_) => Platform::Tdx,
            Profile::SimTdx(_) => Platform::SimTdx,
        }
    }

    /// Check claims against this profile.
    pub fn check(&self, claims: &Claims) -> Result<(), Violation> {
        if claims.platform != self.platform() {
            return Err(Violation::Platform {
                expected: self.platform(),
                actual: claims.platform,
            });
        }
        match self {
            Profile::SevSnp(p) | Profile::SimSnp(p) => p.check(claims),
            Profile::Tdx(p) | Profile::SimTdx(p) => p.check(claims),
        }
    }
}

/// Why claims do not match a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The claims come from another platform.
    #[error("platform {actual} is not allowed (profile is for {expected})")]
    Platform {
        /// The profile's platform.
        expected: Platform,
        /// The claims' platform.
        actual: Platform,
    },
    /// A measured value differs.
    #[error("{field} not allowed: expected {expected}, got {actual}")]
    Mismatch {
        /// The field ("measurement", "host_data", ...).
        field: &'static str,
        /// The profile's value.
        expected: String,
        /// The claims' value.
        actual: String,
    },
    /// The TEE is debuggable and the profile does not allow it.
    #[error("debug mode is not allowed")]
    Debug,
    /// A TCB component is below the minimum.
    #[error(
        "TCB {component} {actual} is below the minimum {minimum}{}",
        if *.default_floor { " (the default floor of a profile without min_tcb)" } else { "" }
    )]
    TcbTooLow {
        /// The component ("bootloader", "snp", ...).
        component: &'static str,
        /// The profile's minimum (its `min_tcb`, or the default floor when it has none).
        minimum: u8,
        /// The claims' value.
        actual: u8,
        /// Whether the minimum is the default floor ([`MinTcb::default_for`]) rather than the profile's own.
        default_floor: bool,
    },
    /// The SEV-SNP report comes from a less privileged VM level than the profile allows.
    #[error("VMPL {actual} is above the maximum {maximum} (max_vmpl)")]
    Vmpl {
        /// The profile's `max_vmpl`.
        maximum: u32,
        /// The report's VMPL.
        actual: u32,
    },
    /// The SEV-SNP guest policy allows a migration agent and the profile does not.
    #[error(
        "guest policy {guest_policy:#x} allows a migration agent (MIGRATE_MA, bit 18), which the profile refuses \
         (allow_migration_agent = false)"
    )]
    MigrationAgent {
        /// The report's guest policy.
        guest_policy: u64,
    },
    /// The SEV-SNP guest policy allows SMT and the profile requires it disallowed.
    #[error("guest policy {guest_policy:#x} allows SMT (bit 16), which the profile refuses (allow_smt = false)")]
    Smt {
        /// The report's guest policy.
        guest_policy: u64,
    },
    /// The TDX platform's TCB status is not among the allowed ones.
    #[error("TCB status {actual} is not allowed (allowed: {allowed}; advisories: {advisories})")]
    TcbStatus {
        /// The claims' status.
        actual: String,
        /// The allowed statuses.
        allowed: String,
        /// Advisories of the platform's TCB level (may be empty).
        advisories: String,
    },
    /// The report was signed by a key kind the profile does not allow.
    #[error("signing key {actual} is not allowed (allowed: {allowed})")]
    SigningKey {
        /// The kind that signed.
        actual: String,
        /// The allowed kinds.
        allowed: String,
    },
}

/// Why a policy refuses claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// The app id has no entry in the policy.
    #[error("app {0} is unknown to the policy")]
    UnknownApp(String),
    /// No profile exists for the claims' platform.
    #[error("{subject}: no profile for platform {platform}")]
    NoProfileForPlatform {
        /// "app X" or "gateway".
        subject: String,
        /// The claims' platform.
        platform: Platform,
    },
    /// Profiles for the platform exist, and each refused the claims.
    #[error("{subject}: {}", DisplayViolations(.violations))]
    Refused {
        /// "app X" or "gateway".
        subject: String,
        /// One violation per profile of the claims' platform, in file order.
        violations: Vec<Violation>,
    },
    /// The policy pins the peer's configuration digest, and the peer's certificate binds another or none.
    #[error(
        "{subject}: configuration digest {} is not one of the pinned {allowed}",
        found.map_or_else(|| "(none bound in its certificate)".to_owned(), |d| d.to_string())
    )]
    ConfigDigest {
        /// "gateway".
        subject: String,
        /// The digest the peer's certificate binds, if any.
        found: Option<crate::ConfigDigest>,
        /// The pinned digests, comma-separated.
        allowed: String,
    },
}

struct DisplayViolations<'a>(&'a [Violation]);

impl fmt::Display for DisplayViolations<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "no profile matched")?;
                for (i, v) in many.iter().enumerate() {
                    write!(f, "; profile {}: {v}", i + 1)?;
                }
                Ok(())
            }
        }
    }
}

/// Check claims against a list of profiles: the first match wins.
fn check_profiles<'p>(
    subject: String,
    profiles: &'p [Profile],
    claims: &Claims,
) -> Result<&'p Profile, PolicyViolation> {
    let mut violations = Vec::new();
    for p in profiles.iter().filter(|p| p.platform() == claims.platform) {
        match p.check(claims) {
            Ok(()) => return Ok(p),
            Err(v) => violations.push(v),
        }
    }
    if violations.is_empty() {
        Err(PolicyViolation::NoProfileForPlatform {
            subject,
            platform: claims.platform,
        })
    } else {
        Err(PolicyViolation::Refused {
            subject,
            violations,
        })
    }
}

/// The gateway's policy for app instances: per app id, the allowed profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPolicy {
    /// App id to its entry.
    #[serde(default)]
    pub apps: BTreeMap<String, AppEntry>,
}

/// The profiles of one app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    /// Allowed profiles; an instance must match one.
    #[serde(default)]
    pub profile: Vec<Profile>,
}

impl AppPolicy {
    /// Parse a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Check an instance's claims against its app's profiles, returning the profile that matched.
    pub fn check(&self, app_id: &str, claims: &Claims) -> Result<&Profile, PolicyViolation> {
        let entry = self
            .apps
            .get(app_id)
            .ok_or_else(|| PolicyViolation::UnknownApp(app_id.to_owned()))?;
        check_profiles(format!("app {app_id}"), &entry.profile, claims)
    }
}

/// The agent's policy for gateways: the profiles an acceptable gateway may match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayPolicy {
    /// Allowed profiles; the gateway must match one.
    #[serde(default)]
    pub profile: Vec<Profile>,
    /// Accepted digests of the gateway's security-relevant configuration (`gateway config-digest` prints the one
    /// of a configuration file). Empty: any configuration; otherwise the gateway's RA-TLS certificate must bind one
    /// of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_digest: Vec<crate::ConfigDigest>,
}

impl GatewayPolicy {
    /// Parse a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Check a gateway's claims, returning the profile that matched: a profile must accept them, and a pinned
    /// configuration digest must be the one they carry.
    pub fn check(&self, claims: &Claims) -> Result<&Profile, PolicyViolation> {
        let profile = check_profiles("gateway".to_owned(), &self.profile, claims)?;
        let pinned_and_missing = !self.config_digest.is_empty()
            && !claims
                .config_digest
                .is_some_and(|d| self.config_digest.contains(&d));
        if pinned_and_missing {
            return Err(PolicyViolation::ConfigDigest {
                subject: "gateway".to_owned(),
                found: claims.config_digest,
                allowed: join_names(&self.config_digest),
            });
        }
        Ok(profile)
    }
}

/// Anything that decides whether claims are acceptable; the RA-TLS verifiers hold one.
pub trait ClaimsPolicy: Send + Sync + fmt::Debug {
    /// Accept or refuse verified claims.
    fn check_claims(&self, claims: &Claims) -> Result<(), PolicyViolation>;
}

impl ClaimsPolicy for GatewayPolicy {
    fn check_claims(&self, claims: &Claims) -> Result<(), PolicyViolation> {
        self.check(claims).map(|_| ())
    }
}

/// An app policy bound to one app id.
#[derive(Debug, Clone)]
pub struct ForApp<P> {
    /// The policy.
    pub policy: P,
    /// The app id whose profiles apply.
    pub app_id: String,
}

impl ClaimsPolicy for ForApp<AppPolicy> {
    fn check_claims(&self, claims: &Claims) -> Result<(), PolicyViolation> {
        self.policy.check(&self.app_id, claims).map(|_| ())
    }
}

impl<F: Fn(&Claims) -> Result<(), PolicyViolation> + Send + Sync> ClaimsPolicy for PolicyFn<F> {
    fn check_claims(&self, claims: &Claims) -> Result<(), PolicyViolation> {
        (self.0)(claims)
    }
}

/// A policy given as a closure (e.g. one that looks the app id up in a registry).
pub struct PolicyFn<F>(pub F);

impl<F> fmt::Debug for PolicyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PolicyFn")
    }
}

/// The names of `items`, comma-separated (the allowed values in a [`Violation`]).
fn join_names<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
