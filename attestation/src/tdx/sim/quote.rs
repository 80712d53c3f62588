//! Simulated DCAP quotes (v4 and v5, TD 1.0 and 1.5 bodies): the TD report signed by the attestation key, the QE
//! report signed by the PCK key, the PCK chain embedded.

use sha2::{Digest, Sha256};

use super::pki::derive_bytes;
use super::{
    SimTdxPki, QE_ATTRIBUTES, QE_ISV_PROD_ID, QE_ISV_SVN, QE_SVN_IN_HEADER, QE_VENDOR_ID,
    SIM_CPU_SVN, SIM_PCE_SVN, SIM_TEE_TCB_SVN_UP_TO_DATE, TD_ATTR_SEPT_VE_DISABLE,
};
use crate::tdx::error::TdxError;
use crate::tdx::quote::{QuoteVersion, HEADER_LEN, TD_REPORT10_LEN, TEE_TYPE_TDX};

/// The TD report fields of a simulated quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTdReport {
    /// Quote format to produce.
    pub version: QuoteVersion,
    /// TEE_TCB_SVN (selects the TCB level; see [`SIM_TEE_TCB_SVN_UP_TO_DATE`]).
    pub tee_tcb_svn: [u8; 16],
    /// MRTD.
    pub mr_td: [u8; 48],
    /// RTMR0-3.
    pub rtmr: [[u8; 48]; 4],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// TDATTRIBUTES (default: SEPT_VE_DISABLE only).
    pub td_attributes: u64,
    /// XFAM.
    pub xfam: [u8; 8],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TDX 1.5 only (quote v5): `Some` produces a TD 1.5 body (type 3) carrying this TEE_TCB_SVN2 (the module's
    /// current TCB after a TD-preserving update) and a zero MRSERVICETD; `None` a TD 1.0 body. A v4 quote has no
    /// room for it: [`SimTdxPki::quote`] refuses the combination.
    pub tee_tcb_svn2: Option<[u8; 16]>,
}

impl Default for SimTdReport {
    fn default() -> Self {
        SimTdReport {
            version: QuoteVersion::V4,
            tee_tcb_svn: SIM_TEE_TCB_SVN_UP_TO_DATE,
            mr_td: [0; 48],
            rtmr: [[0; 48]; 4],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            td_attributes: TD_ATTR_SEPT_VE_DISABLE,
            xfam: [0xe7, 0x02, 0x06, 0, 0, 0, 0, 0],
            report_data: [0; 64],
            tee_tcb_svn2: None,
        }
    }
}

impl SimTdxPki {
    /// The QE report (SGX enclave report, 384 bytes) committing to the attestation key.
    fn qe_report(&self, qe_auth_data: &[u8; 32]) -> Vec<u8> {
        let mut hashed = self.attestation.public_xy().to_vec();
        hashed.extend_from_slice(qe_auth_data);
        let mut report_data = [0u8; 64];
        report_data[..32].copy_from_slice(&Sha256::digest(&hashed));

        let mut r = Vec::with_capacity(384);
        r.extend_from_slice(&SIM_CPU_SVN);
        r.extend_from_slice(&0u32.to_le_bytes()); // MISCSELECT
        r.extend_from_slice(&[0; 28]);
        r.extend_from_slice(&QE_ATTRIBUTES);
        r.extend_from_slice(&self.qe_mr_enclave);
        r.extend_from_slice(&[0; 32]);
        r.extend_from_slice(&self.qe_mr_signer);
        r.extend_from_slice(&[0; 96]);
        r.extend_from_slice(&QE_ISV_PROD_ID.to_le_bytes());
        r.extend_from_slice(&QE_ISV_SVN.to_le_bytes());
        r.extend_from_slice(&[0; 60]);
        r.extend_from_slice(&report_data);
        r
    }

    /// A quote over `td`: header and TD report signed by the attestation key, QE report signed by the PCK key,
    /// the PCK chain embedded (certification data type 5 inside type 6). Refuses a TDX 1.5 body in a v4 quote.
    pub fn quote(&self, td: &SimTdReport) -> Result<Vec<u8>, TdxError> {
        if td.version == QuoteVersion::V4 && td.tee_tcb_svn2.is_some() {
            return Err(TdxError::SimPki(
                "a v4 quote carries a TD 1.0 report: tee_tcb_svn2 needs QuoteVersion::V5".into(),
            ));
        }
        let mut signed = Vec::with_capacity(HEADER_LEN + 6 + TD_REPORT10_LEN);
        signed.extend_from_slice(&td.version.number().to_le_bytes());
        signed.extend_from_slice(&2u16.to_le_bytes()); // ECDSA-256 with P-256
        signed.extend_from_slice(&TEE_TYPE_TDX.to_le_bytes());
        signed.extend_from_slice(&QE_SVN_IN_HEADER.to_le_bytes());
        signed.extend_from_slice(&SIM_PCE_SVN.to_le_bytes());
        signed.extend_from_slice(&QE_VENDOR_ID);
        signed.extend_from_slice(&derive_bytes::<20>(&self.seed, "qe-user-data"));
        if td.version == QuoteVersion::V5 {
            let (body_type, len) = match td.tee_tcb_svn2 {
                None => (2u16, TD_REPORT10_LEN),         // TD report 1.0
                Some(_) => (3u16, TD_REPORT10_LEN + 64), // TD report 1.5
            };
            signed.extend_from_slice(&body_type.to_le_bytes());
            signed.extend_from_slice(&(len as u32).to_le_bytes());
        }
        signed.extend_from_slice(&td.tee_tcb_svn);
        signed.extend_from_slice(&self.mr_seam);
        signed.extend_from_slice(&[0; 48]); // MRSIGNERSEAM: Intel's module
        signed.extend_from_slice(&[0; 8]); // SEAMATTRIBUTES
        signed.extend_from_slice(&td.td_attributes.to_le_bytes());
        signed.extend_from_slice(&td.xfam);
        signed.extend_from_slice(&td.mr_td);
        signed.extend_from_slice(&td.mr_config_id);
        signed.extend_from_slice(&td.mr_owner);
        signed.extend_from_slice(&td.mr_owner_config);
        for rtmr in &td.rtmr {
            signed.extend_from_slice(rtmr);
        }
        signed.extend_from_slice(&td.report_data);
        if let Some(svn2) = &td.tee_tcb_svn2 {
            signed.extend_from_slice(svn2);
            signed.extend_from_slice(&[0; 48]); // MRSERVICETD: no service TD bound
        }

        let qe_auth_data: [u8; 32] = derive_bytes(&self.seed, "qe-auth-data");
        let qe_report = self.qe_report(&qe_auth_data);
        let chain = self.pck_chain_pem().into_bytes();
        let mut qe_cert_data = Vec::new();
        qe_cert_data.extend_from_slice(&qe_report);
        qe_cert_data.extend_from_slice(&self.pck.sign_raw(&qe_report));
        qe_cert_data.extend_from_slice(&32u16.to_le_bytes());
        qe_cert_data.extend_from_slice(&qe_auth_data);
        qe_cert_data.extend_from_slice(&5u16.to_le_bytes()); // PCK certificate chain
        qe_cert_data.extend_from_slice(&(chain.len() as u32).to_le_bytes());
        qe_cert_data.extend_from_slice(&chain);

        let mut auth = Vec::new();
        auth.extend_from_slice(&self.attestation.sign_raw(&signed));
        auth.extend_from_slice(&self.attestation.public_xy());
        auth.extend_from_slice(&6u16.to_le_bytes()); // QE report certification data
        auth.extend_from_slice(&(qe_cert_data.len() as u32).to_le_bytes());
        auth.extend_from_slice(&qe_cert_data);

        let mut quote = signed;
        quote.extend_from_slice(&(auth.len() as u32).to_le_bytes());
        quote.extend_from_slice(&auth);
        Ok(quote)
    }
}
