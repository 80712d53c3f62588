//! Signed simulated reports in the real 1184-byte layout, and complete evidence around them.

use p384::ecdsa::signature::DigestSigner;
use rand::RngCore;
use sev::firmware::guest::{AttestationReport, GuestPolicy};
use sev::firmware::host::TcbVersion;
use sev::parser::ByteParser;
use sha2::{Digest, Sha384};

use super::SimSnpPki;
use crate::error::AttestError;
use crate::snp::evidence::{SigningKeyKind, SnpEvidence};
use crate::snp::report::{signature_to_raw, SIGNED_LEN};

/// What a simulated report should contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReportRequest {
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// Guest SVN.
    pub guest_svn: u32,
    /// Whether the guest policy allows debugging (DEBUG, bit 19).
    pub debug: bool,
    /// Whether the guest policy allows a migration agent (MIGRATE_MA, bit 18).
    pub migrate_ma: bool,
    /// Whether the guest policy allows SMT (bit 16; real guests usually set it).
    pub smt: bool,
    /// The VM privilege level the report is requested from (0 to 3).
    pub vmpl: u32,
}

impl Default for SimReportRequest {
    /// Zero report data, measurement and host data; a guest at VMPL 0 whose policy allows SMT and nothing else.
    fn default() -> Self {
        SimReportRequest {
            report_data: [0; 64],
            measurement: [0; 48],
            host_data: [0; 32],
            guest_svn: 0,
            debug: false,
            migrate_ma: false,
            smt: true,
            vmpl: 0,
        }
    }
}

impl SimSnpPki {
    /// Produce a signed report in the real format.
    pub fn report(&self, request: &SimReportRequest) -> Result<Vec<u8>, AttestError> {
        self.report_signed_by(request, SigningKeyKind::Vcek)
    }

    fn report_signed_by(
        &self,
        request: &SimReportRequest,
        kind: SigningKeyKind,
    ) -> Result<Vec<u8>, AttestError> {
        let tcb = TcbVersion::new(
            None,
            self.tcb.bootloader,
            self.tcb.tee,
            self.tcb.snp,
            self.tcb.microcode,
        );
        let mut policy: u64 = 1 << 17; // reserved, must be one
        for (set, bit) in [
            (request.smt, 16),
            (request.migrate_ma, 18),
            (request.debug, 19),
        ] {
            if set {
                policy |= 1 << bit;
            }
        }
        let mut report_id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut report_id);
        let report = AttestationReport {
            version: 3,
            guest_svn: request.guest_svn,
            policy: GuestPolicy::from(policy),
            vmpl: request.vmpl,
            sig_algo: 1,
            current_tcb: tcb,
            reported_tcb: tcb,
            committed_tcb: tcb,
            launch_tcb: tcb,
            report_data: request.report_data,
            measurement: request.measurement,
            host_data: request.host_data,
            report_id,
            cpuid_fam_id: Some(0x19),
            cpuid_mod_id: Some(0x01),
            cpuid_step: Some(0x01),
            chip_id: self.chip_id,
            current: sev::firmware::guest::Version::new(1, 55, 21),
            committed: sev::firmware::guest::Version::new(1, 55, 21),
            ..Default::default()
        };
        let mut raw = report
            .to_bytes()
            .map_err(|e| AttestError::Malformed(e.to_string()))?
            .to_vec();
        let key = match kind {
            SigningKeyKind::Vcek => &self.vcek_key,
            SigningKeyKind::Vlek => {
                // KEY_INFO.SIGNING_KEY (bits 2-4 at 0x48) = 1: signed by the VLEK.
                raw[0x48] |= 1 << 2;
                &self
                    .vlek
                    .as_ref()
                    .ok_or_else(|| {
                        AttestError::Unavailable("this simulated PKI has no VLEK".into())
                    })?
                    .key
            }
        };
        let sig: p384::ecdsa::Signature =
            key.sign_digest(Sha384::new_with_prefix(&raw[..SIGNED_LEN]));
        let sig_raw = signature_to_raw(&sig);
        raw[SIGNED_LEN..SIGNED_LEN + sig_raw.len()].copy_from_slice(&sig_raw);
        Ok(raw)
    }

    /// Produce complete evidence signed by the simulated VLEK (report, VLEK, ASVK and ARK). Only a freshly
    /// generated PKI has a VLEK (the PEM files hold the VCEK side only).
    pub fn vlek_evidence(&self, request: &SimReportRequest) -> Result<SnpEvidence, AttestError> {
        let vlek = self
            .vlek
            .as_ref()
            .ok_or_else(|| AttestError::Unavailable("this simulated PKI has no VLEK".into()))?;
        Ok(SnpEvidence {
            report: self.report_signed_by(request, SigningKeyKind::Vlek)?,
            vek_kind: SigningKeyKind::Vlek,
            vek: vlek.vlek_der.clone(),
            ask: Some(vlek.asvk_der.clone()),
            ark: Some(self.ark_der.clone()),
        })
    }

    /// Produce complete evidence (report, VCEK, ASK and ARK).
    pub fn evidence(&self, request: &SimReportRequest) -> Result<SnpEvidence, AttestError> {
        Ok(SnpEvidence {
            report: self.report(request)?,
            vek_kind: SigningKeyKind::Vcek,
            vek: self.vcek_der.clone(),
            ask: Some(self.ask_der.clone()),
            ark: Some(self.ark_der.clone()),
        })
    }
}
