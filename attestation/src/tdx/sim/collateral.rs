//! Collateral signed by the simulated PKI: TCB info with an `UpToDate` and an `OutOfDate` level, QE identity, the
//! root CA and PCK CRLs and their issuer chains, for a given issue time.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber,
};

use super::pki::{sim_err, to_pem, SimKey};
use super::{
    SimTdxPki, QE_ATTRIBUTES, QE_ISV_PROD_ID, QE_ISV_SVN, SIM_ADVISORY, SIM_CPU_SVN, SIM_FMSPC,
    SIM_PCE_SVN, SIM_TEE_TCB_SVN_OUT_OF_DATE, SIM_TEE_TCB_SVN_UP_TO_DATE,
};
use crate::tdx::collateral::{rfc3339, unix_secs, Collateral};
use crate::tdx::error::TdxError;

fn offset_time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// Options of [`SimTdxPki::collateral_with`].
#[derive(Debug, Clone)]
pub struct SimCollateralOptions {
    /// Issue time of TCB info, QE identity and CRLs.
    pub issued: SystemTime,
    /// How long they stay valid (`nextUpdate - issueDate`).
    pub validity: Duration,
    /// List the PCK certificate as revoked in the PCK CRL.
    pub revoke_pck: bool,
    /// `tcbEvaluationDataNumber` of the TCB info and the QE identity ([`SIM_TCB_EVALUATION_DATA_NUMBER`] by
    /// default); a lower one makes collateral from before a TCB recovery.
    pub evaluation_data_number: u32,
}

/// The `tcbEvaluationDataNumber` of simulated collateral unless options say otherwise.
pub const SIM_TCB_EVALUATION_DATA_NUMBER: u32 = 17;

impl SimTdxPki {
    /// Collateral issued at `issued`, valid for 30 days.
    pub fn collateral(&self, issued: SystemTime) -> Result<Collateral, TdxError> {
        self.collateral_with(&SimCollateralOptions {
            issued,
            validity: Duration::from_secs(30 * 24 * 3600),
            revoke_pck: false,
            evaluation_data_number: SIM_TCB_EVALUATION_DATA_NUMBER,
        })
    }

    /// Collateral as `options` say: signed TCB info and QE identity, root CA and PCK CRLs, issuer chains.
    pub fn collateral_with(&self, options: &SimCollateralOptions) -> Result<Collateral, TdxError> {
        let issued = unix_secs(options.issued);
        let next = issued.saturating_add(options.validity.as_secs());
        let (issue_date, next_update) = (rfc3339(issued), rfc3339(next));
        let comps = |svns: &[u8]| {
            svns.iter()
                .map(|s| serde_json::json!({ "svn": s }))
                .collect::<Vec<_>>()
        };
        let tcb_level = |tdx: &[u8; 16], date: &str, status: &str, advisories: &[&str]| {
            serde_json::json!({
                "tcb": {
                    "sgxtcbcomponents": comps(&SIM_CPU_SVN),
                    "pcesvn": SIM_PCE_SVN,
                    "tdxtcbcomponents": comps(tdx),
                },
                "tcbDate": date,
                "tcbStatus": status,
                "advisoryIDs": advisories,
            })
        };
        let tcb_info = serde_json::json!({
            "id": "TDX",
            "version": 3,
            "issueDate": issue_date,
            "nextUpdate": next_update,
            "fmspc": hex::encode_upper(SIM_FMSPC),
            "pceId": "0000",
            "tcbType": 0,
            "tcbEvaluationDataNumber": options.evaluation_data_number,
            "tdxModule": {
                "mrsigner": hex::encode_upper([0u8; 48]),
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
            },
            "tcbLevels": [
                tcb_level(&SIM_TEE_TCB_SVN_UP_TO_DATE, "2024-03-13T00:00:00Z", "UpToDate", &[]),
                tcb_level(&SIM_TEE_TCB_SVN_OUT_OF_DATE, "2023-08-09T00:00:00Z", "OutOfDate", &[SIM_ADVISORY]),
            ],
        })
        .to_string();
        let qe_identity = serde_json::json!({
            "id": "TD_QE",
            "version": 2,
            "issueDate": issue_date,
            "nextUpdate": next_update,
            "tcbEvaluationDataNumber": options.evaluation_data_number,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": hex::encode_upper(QE_ATTRIBUTES),
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": hex::encode_upper(self.qe_mr_signer),
            "isvprodid": QE_ISV_PROD_ID,
            "tcbLevels": [{
                "tcb": { "isvsvn": QE_ISV_SVN },
                "tcbDate": "2024-03-13T00:00:00Z",
                "tcbStatus": "UpToDate",
            }],
        })
        .to_string();

        let this_update = offset_time(options.issued);
        let next_update_t = offset_time(options.issued + options.validity);
        let crl = |number: u8, issuer: &Issuer<'_, &SimKey>, revoked: Vec<RevokedCertParams>| {
            CertificateRevocationListParams {
                this_update,
                next_update: next_update_t,
                crl_number: SerialNumber::from_slice(&[number]),
                issuing_distribution_point: None,
                revoked_certs: revoked,
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| sim_err("CRL", e))
        };
        let root_issuer = Issuer::from_params(&self.root_params, &self.root);
        let pck_ca_issuer = Issuer::from_params(&self.pck_ca_params, &self.pck_ca);
        let revoked = if options.revoke_pck {
            vec![RevokedCertParams {
                serial_number: self.pck_serial.clone(),
                revocation_time: this_update,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }]
        } else {
            Vec::new()
        };
        let root_ca_crl = crl(1, &root_issuer, Vec::new())?;
        let pck_crl = crl(1, &pck_ca_issuer, revoked)?;

        let signing_chain = format!("{}{}", to_pem(&self.tcb_signer_der), to_pem(&self.root_der));
        Ok(Collateral::new(dcap_qvl::QuoteCollateralV3 {
            pck_crl_issuer_chain: format!("{}{}", to_pem(&self.pck_ca_der), to_pem(&self.root_der)),
            root_ca_crl,
            pck_crl,
            tcb_info_issuer_chain: signing_chain.clone(),
            tcb_info_signature: self.tcb_signer.sign_raw(tcb_info.as_bytes()).to_vec(),
            tcb_info,
            qe_identity_issuer_chain: signing_chain,
            qe_identity_signature: self.tcb_signer.sign_raw(qe_identity.as_bytes()).to_vec(),
            qe_identity,
            pck_certificate_chain: None,
        }))
    }
}
