//! SEV-SNP claims: what a verified report says ([`SnpClaims`]), with the processor generation ([`SnpProduct`]) and
//! TCB versions ([`SnpTcb`]) it names. Byte fields serialize as lowercase hex.

use serde::{Deserialize, Serialize};

use super::evidence::SigningKeyKind;

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
}
