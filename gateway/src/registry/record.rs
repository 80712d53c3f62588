//! What the registry remembers about one instance, and what its admission verified.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use attestation::Claims;
use protocol::control::{AppId, InstanceId, PortPolicy, PublicKey};

/// One registered instance, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The instance id.
    pub instance_id: InstanceId,
    /// The app it belongs to (fixed at first registration).
    pub app_id: AppId,
    /// Its current WireGuard public key.
    pub public_key: PublicKey,
    /// Its stable tunnel address.
    pub tunnel_address: Ipv4Addr,
    /// The ports it exposes.
    pub ports: Vec<PortPolicy>,
    /// A one-line summary of the attestation it last registered with (platform and measurement).
    pub attestation: String,
    /// The verified claims it last registered with, kept so that a changed policy can be checked against them.
    /// `None` only for records stored before claims were kept; such a record passes no re-check.
    pub claims: Option<Claims>,
    /// When the evidence it last registered with stops being valid (its RA-TLS certificate's end), seconds since
    /// the Unix epoch. An instance that has not registered with fresh evidence by then is removed.
    pub valid_until: u64,
    /// When it first registered, seconds since the Unix epoch.
    pub registered_at: u64,
    /// When it last registered, seconds since the Unix epoch.
    pub last_seen: u64,
}

/// What a registration's attestation check established, stored with the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The verified claims.
    pub claims: Claims,
    /// When the evidence stops being valid, seconds since the Unix epoch.
    pub valid_until: u64,
}

impl Admission {
    /// The one-line summary stored beside the claims.
    pub fn summary(&self) -> String {
        self.claims.summary().to_string()
    }
}

/// Why an instance was taken out of the registry before its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The app policy in force no longer admits its stored claims (or it has none to check).
    Policy(String),
    /// Its evidence reached its end without a registration with fresh evidence.
    EvidenceExpired {
        /// When the evidence ended, seconds since the Unix epoch.
        valid_until: u64,
    },
    /// It registered again and the policy refused it.
    RefusedRegistration(String),
}

impl Revocation {
    /// A short name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Policy(_) => "policy",
            Self::EvidenceExpired { .. } => "evidence_expired",
            Self::RefusedRegistration(_) => "refused_registration",
        }
    }
}

impl std::fmt::Display for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Policy(why) => write!(f, "the app policy no longer admits it: {why}"),
            Self::EvidenceExpired { valid_until } => {
                write!(f, "its evidence ended at {valid_until} without renewal")
            }
            Self::RefusedRegistration(why) => write!(f, "its registration was refused: {why}"),
        }
    }
}

/// How many instances were removed before their expiry, by reason.
#[derive(Debug, Default)]
pub struct RevocationCounts {
    /// The app policy no longer admitted their stored claims.
    pub policy: AtomicU64,
    /// Their evidence ended without a registration with fresh evidence.
    pub evidence_expired: AtomicU64,
    /// They registered again and were refused.
    pub refused_registration: AtomicU64,
}

impl RevocationCounts {
    /// Counts one removal.
    pub fn count(&self, why: &Revocation) {
        let counter = match why {
            Revocation::Policy(_) => &self.policy,
            Revocation::EvidenceExpired { .. } => &self.evidence_expired,
            Revocation::RefusedRegistration(_) => &self.refused_registration,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(reason, count)` for every reason, in a fixed order (for metrics).
    pub fn by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ("policy", self.policy.load(Ordering::Relaxed)),
            (
                "evidence_expired",
                self.evidence_expired.load(Ordering::Relaxed),
            ),
            (
                "refused_registration",
                self.refused_registration.load(Ordering::Relaxed),
            ),
        ]
    }

    /// Appends the counts in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP tee_gateway_instances_revoked_total Instances removed before their expiry, by reason.\n",
        );
        out.push_str("# TYPE tee_gateway_instances_revoked_total counter\n");
        for (reason, n) in self.by_reason() {
            out.push_str(&format!(
                "tee_gateway_instances_revoked_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
    }
}

/// Admissions for the gateway's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::Admission;

    /// An admission of simulated SEV-SNP claims with `measurement`, valid until `valid_until`.
    pub(crate) fn admission(measurement: u8, valid_until: u64) -> Admission {
        Admission {
            claims: test_support::claims::sim_snp(measurement),
            valid_until,
        }
    }
}
