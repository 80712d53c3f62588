//! Claims: the typed result of verifying evidence.
//!
//! A [`Claims`] value exists only for evidence whose signatures, certificate chain, binding and platform checks all
//! passed; policy is applied to it afterwards. Byte fields serialize as lowercase hex.

use serde::{Deserialize, Serialize};

use crate::platform::Platform;
pub use crate::snp::{SnpClaims, SnpProduct, SnpTcb};
pub use crate::tdx::{TcbStatus, TdxClaims};

/// What verified evidence says about the TEE that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The platform whose root of trust signed the evidence.
    pub platform: Platform,
    /// The 64 bytes of report data the evidence carries (for RA-TLS: the hash binding the certificate's key).
    #[serde(with = "crate::hex_serde")]
    pub report_data: [u8; 64],
    /// Whether the TEE allows a debugger to read its memory (SNP guest policy DEBUG, TDX attribute DEBUG).
    pub debug: bool,
    /// The digest of the attester's security-relevant configuration, when its RA-TLS certificate binds one
    /// ([`crate::config_digest`]). Evidence alone never sets it: the RA-TLS verifier does, after checking that the
    /// report data binds it with the certificate's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<crate::ConfigDigest>,
    /// The platform-specific measurements and TCB.
    #[serde(flatten)]
    pub details: PlatformClaims,
}

impl Claims {
    /// The SNP claims, when the evidence was SNP.
    pub fn snp(&self) -> Option<&SnpClaims> {
        match &self.details {
            PlatformClaims::Snp(s) => Some(s),
            PlatformClaims::Tdx(_) => None,
        }
    }

    /// The TDX claims, when the evidence was TDX.
    pub fn tdx(&self) -> Option<&TdxClaims> {
        match &self.details {
            PlatformClaims::Tdx(t) => Some(t),
            PlatformClaims::Snp(_) => None,
        }
    }
}

impl Claims {
    /// A one-line summary for logs and records: the platform, the launch measurement (SNP `measurement`, TDX
    /// `mr_td`, in hex) and the debug flag, e.g. `sim-snp measurement=0101… debug=false`.
    pub fn summary(&self) -> ClaimsSummary<'_> {
        ClaimsSummary(self)
    }
}

/// The one-line summary of [`Claims`] ([`Claims::summary`]), written by its `Display`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsSummary<'a>(&'a Claims);

impl std::fmt::Display for ClaimsSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let claims = self.0;
        let (key, measurement) = match &claims.details {
            PlatformClaims::Snp(s) => ("measurement", &s.measurement),
            PlatformClaims::Tdx(t) => ("mr_td", &t.td.mr_td),
        };
        write!(
            f,
            "{} {key}={} debug={}",
            claims.platform,
            hex::encode(measurement),
            claims.debug
        )
    }
}

/// Platform-specific claims, tagged `"kind"` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
// Claims are built once per verification and mostly moved whole; boxing the larger variant would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum PlatformClaims {
    /// SEV-SNP claims.
    Snp(SnpClaims),
    /// Intel TDX claims.
    Tdx(TdxClaims),
}

/// Claims for tests, in this crate and (with the `fixtures` feature) in others: values that verification would
/// produce, without producing and verifying evidence.
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use super::*;
    use crate::evidence::SigningKeyKind;

    /// Milan SNP claims of a VCEK-signed report with `measurement` in every byte, at the simulated chip's TCB
    /// ([`crate::snp::sim::SIM_TCB`]).
    pub fn snp_claims(measurement: u8) -> SnpClaims {
        SnpClaims {
            product: SnpProduct::Milan,
            report_version: 3,
            measurement: [measurement; 48],
            host_data: [2; 32],
            guest_policy: 0x30000,
            guest_svn: 0,
            vmpl: 0,
            family_id: [0; 16],
            image_id: [0; 16],
            id_key_digest: [0; 48],
            reported_tcb: crate::snp::sim::SIM_TCB,
            current_tcb: crate::snp::sim::SIM_TCB,
            committed_tcb: crate::snp::sim::SIM_TCB,
            launch_tcb: crate::snp::sim::SIM_TCB,
            chip_id: [3; 64],
            signing_key: SigningKeyKind::Vcek,
        }
    }

    /// Simulated SEV-SNP [`Claims`] (not debug, no report data) around [`snp_claims`]`(measurement)`.
    pub fn sim_snp(measurement: u8) -> Claims {
        Claims {
            platform: Platform::SimSnp,
            report_data: [0; 64],
            debug: false,
            config_digest: None,
            details: PlatformClaims::Snp(snp_claims(measurement)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snp_claims() -> Claims {
        Claims {
            platform: Platform::SimSnp,
            report_data: [0xab; 64],
            debug: false,
            config_digest: None,
            details: PlatformClaims::Snp(fixtures::snp_claims(1)),
        }
    }

    #[test]
    fn claims_serialize_bytes_as_hex() {
        let c = snp_claims();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["platform"], "sim-snp");
        assert_eq!(v["kind"], "snp");
        assert_eq!(v["measurement"], "01".repeat(48));
        assert_eq!(v["report_data"], "ab".repeat(64));
        assert_eq!(v["signing_key"], "vcek");
        let back: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    /// What the binaries wrote before [`Claims::summary`]: the measurement found in the claims' JSON.
    fn summary_through_json(claims: &Claims) -> String {
        let value = serde_json::to_value(claims).unwrap();
        let measurement = ["measurement", "mr_td"]
            .iter()
            .find_map(|k| {
                value
                    .get(*k)
                    .and_then(|v| v.as_str())
                    .map(|m| format!(" {k}={m}"))
            })
            .unwrap_or_default();
        format!(
            "{}{measurement} debug={}",
            claims.platform.as_str(),
            claims.debug
        )
    }

    #[test]
    fn summary_names_platform_measurement_and_debug() {
        let snp = snp_claims();
        assert_eq!(
            snp.summary().to_string(),
            format!("sim-snp measurement={} debug=false", "01".repeat(48))
        );
        assert_eq!(snp.summary().to_string(), summary_through_json(&snp));
        let tdx = crate::tdx::test_support::claims_of(crate::tdx::test_support::td());
        assert_eq!(
            tdx.summary().to_string(),
            format!("sim-tdx mr_td={} debug=false", "11".repeat(48))
        );
        assert_eq!(tdx.summary().to_string(), summary_through_json(&tdx));
    }
}
