//! Claims: the typed result of verifying evidence.
//!
//! A [`Claims`] value exists only for evidence whose signatures, certificate chain, binding and platform checks all
//! passed; policy is applied to it afterwards. Byte fields serialize as lowercase hex.

use serde::{Deserialize, Serialize};

use crate::evidence::SigningKeyKind;
use crate::platform::Platform;
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

/// The AMD processor generation an SNP report came from, as named by its root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnpProduct {
    /// EPYC 7003 (Zen 3).
    Milan,
    /// EPYC 9004 (Zen 4).
    Genoa,
    /// EPYC 9005 (Zen 5).
    Turin,
}

impl SnpProduct {
    /// The product name as AMD writes it in certificate names ("Milan", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SnpProduct::Milan => "Milan",
            SnpProduct::Genoa => "Genoa",
            SnpProduct::Turin => "Turin",
        }
    }
}

/// An SNP TCB version: the security version numbers of the firmware components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SnpTcb {
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
    /// FMC SVN (Turin and later only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

impl SnpTcb {
    /// Whether every component of `self` is at least that of `min` (an FMC minimum is ignored where absent).
    pub fn meets(&self, min: &SnpTcb) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
            && match (self.fmc, min.fmc) {
                (_, None) => true,
                (Some(a), Some(b)) => a >= b,
                (None, Some(_)) => false,
            }
    }
}

impl std::fmt::Display for SnpTcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader={} tee={} snp={} microcode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )?;
        if let Some(fmc) = self.fmc {
            write!(f, " fmc={fmc}")?;
        }
        Ok(())
    }
}

impl From<sev::firmware::host::TcbVersion> for SnpTcb {
    fn from(t: sev::firmware::host::TcbVersion) -> Self {
        SnpTcb {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        }
    }
}

/// Verified SEV-SNP claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpClaims {
    /// Processor generation.
    pub product: SnpProduct,
    /// Report format version.
    pub report_version: u32,
    /// MEASUREMENT: the launch digest of the guest.
    #[serde(with = "crate::hex_serde")]
    pub measurement: [u8; 48],
    /// HOST_DATA: 32 bytes the host supplied at launch.
    #[serde(with = "crate::hex_serde")]
    pub host_data: [u8; 32],
    /// The guest policy word (bit 19: debug allowed).
    pub guest_policy: u64,
    /// The guest's security version number.
    pub guest_svn: u32,
    /// The VM privilege level that requested the report.
    pub vmpl: u32,
    /// FAMILY_ID from the ID block.
    #[serde(with = "crate::hex_serde")]
    pub family_id: [u8; 16],
    /// IMAGE_ID from the ID block.
    #[serde(with = "crate::hex_serde")]
    pub image_id: [u8; 16],
    /// SHA-384 of the ID key, or zeros.
    #[serde(with = "crate::hex_serde")]
    pub id_key_digest: [u8; 48],
    /// The TCB the report was signed under; it equals the TCB in the VCEK certificate.
    pub reported_tcb: SnpTcb,
    /// The TCB currently running.
    pub current_tcb: SnpTcb,
    /// The committed (anti-rollback) TCB.
    pub committed_tcb: SnpTcb,
    /// The TCB at the guest's launch.
    pub launch_tcb: SnpTcb,
    /// CHIP_ID (zero when the chip key is masked, e.g. with a VLEK).
    #[serde(with = "crate::hex_serde")]
    pub chip_id: [u8; 64],
    /// Which key signed the report.
    pub signing_key: SigningKeyKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcb_ordering_checks_each_component() {
        let t = SnpTcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        };
        assert!(t.meets(&t));
        assert!(t.meets(&SnpTcb::default()));
        assert!(!t.meets(&SnpTcb { snp: 9, ..t }));
        assert!(!t.meets(&SnpTcb {
            microcode: 116,
            ..t
        }));
        assert!(!t.meets(&SnpTcb { fmc: Some(1), ..t }));
        let turin = SnpTcb { fmc: Some(2), ..t };
        assert!(turin.meets(&SnpTcb { fmc: Some(2), ..t }));
        assert!(!turin.meets(&SnpTcb { fmc: Some(3), ..t }));
    }

    #[test]
    fn claims_serialize_bytes_as_hex() {
        let c = Claims {
            platform: Platform::SimSnp,
            report_data: [0xab; 64],
            debug: false,
            details: PlatformClaims::Snp(SnpClaims {
                product: SnpProduct::Milan,
                report_version: 3,
                measurement: [1; 48],
                host_data: [2; 32],
                guest_policy: 0x30000,
                guest_svn: 0,
                vmpl: 0,
                family_id: [0; 16],
                image_id: [0; 16],
                id_key_digest: [0; 48],
                reported_tcb: SnpTcb::default(),
                current_tcb: SnpTcb::default(),
                committed_tcb: SnpTcb::default(),
                launch_tcb: SnpTcb::default(),
                chip_id: [3; 64],
                signing_key: SigningKeyKind::Vcek,
            }),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["platform"], "sim-snp");
        assert_eq!(v["kind"], "snp");
        assert_eq!(v["measurement"], "01".repeat(48));
        assert_eq!(v["report_data"], "ab".repeat(64));
        assert_eq!(v["signing_key"], "vcek");
        let back: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }
}
