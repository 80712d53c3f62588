//! Simulated TDX (`sim-tdx`): a simulated Intel PKI and quotes signed under it, for machines without TDX.
//!
//! Everything is derived from a seed: the keys of a root CA, a PCK platform CA, a PCK certificate (carrying the
//! SGX extensions `dcap-qvl` reads: PPID, TCB components, PCESVN, CPUSVN, PCE-ID, FMSPC, SGX type), a TCB
//! signing certificate, the quoting enclave's attestation key and identity. Certificates and signatures are
//! deterministic (RFC 6979 ECDSA), so the same seed always yields the same PKI. [`SimTdxPki::collateral`]
//! produces signed TCB info, QE identity and both CRLs for a given time; [`SimTdxPki::quote`] produces v4 or
//! v5 quotes whose QE report is signed by the PCK key and whose TD report is signed by the attestation key.
//!
//! This evidence is cryptographically real and is checked by the same verifier as real quotes; it is
//! accepted only by a [`super::TdxVerifier`] built with [`SimTdxPki::root_der`] as its root.

use std::path::Path;
use std::time::{Duration, SystemTime};

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::collateral::{rfc3339, unix_secs, Collateral};
use super::error::TdxError;
use super::evidence::TdxEvidence;
use super::quote::{QuoteVersion, HEADER_LEN, TD_REPORT10_LEN, TEE_TYPE_TDX};
use crate::attester::Attester;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;

/// The FMSPC of the simulated platform.
pub const SIM_FMSPC: [u8; 6] = [0x5e, 0x51, 0x70, 0x00, 0x00, 0x00];
/// The PCE SVN of the simulated platform.
pub const SIM_PCE_SVN: u16 = 13;
/// The CPU SVN of the simulated platform.
pub const SIM_CPU_SVN: [u8; 16] = [4, 4, 2, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0];
/// TEE_TCB_SVN of a TDX module at the simulated platform's latest (`UpToDate`) TCB level.
pub const SIM_TEE_TCB_SVN_UP_TO_DATE: [u8; 16] = [5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// TEE_TCB_SVN of a TDX module at the simulated platform's older (`OutOfDate`) TCB level.
pub const SIM_TEE_TCB_SVN_OUT_OF_DATE: [u8; 16] = [3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// The advisory attached to the simulated `OutOfDate` level.
pub const SIM_ADVISORY: &str = "INTEL-SA-SIM-0001";
/// The organization name in every simulated Intel certificate, which marks it as simulated.
pub const SIM_ORGANIZATION: &str = "tee-gateway simulated Intel PKI";
/// TD attribute bit SEPT_VE_DISABLE.
pub const TD_ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;
/// TD attribute bit DEBUG.
pub const TD_ATTR_DEBUG: u64 = 1;

const QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07,
];
const QE_ISV_PROD_ID: u16 = 2;
const QE_ISV_SVN: u16 = 4;
const QE_SVN_IN_HEADER: u16 = 4;
const QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const SEED_LABEL: &[u8] = b"tee-gateway/sim-tdx/v1:";

/// A P-256 key usable both for raw DCAP signatures and, through `rcgen`, for certificates and CRLs.
struct SimKey {
    signing: SigningKey,
    public_sec1: Vec<u8>,
}

impl SimKey {
    fn derive(seed: &[u8], label: &str) -> Self {
        let mut counter = 0u32;
        loop {
            let digest = Sha256::new()
                .chain_update(SEED_LABEL)
                .chain_update(label.as_bytes())
                .chain_update([0])
                .chain_update(seed)
                .chain_update(counter.to_be_bytes())
                .finalize();
            // A digest that is zero or above the group order (probability ~2^-32) is skipped.
            if let Ok(signing) = SigningKey::from_slice(&digest) {
                let public_sec1 = signing
                    .verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec();
                return SimKey {
                    signing,
                    public_sec1,
                };
            }
            counter += 1;
        }
    }

    /// r || s, 32 bytes each, as DCAP structures carry ECDSA signatures.
    fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        let sig: Signature = self.signing.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }

    /// The public key as X || Y (64 bytes), as DCAP quotes carry the attestation key.
    fn public_xy(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.public_sec1[1..65]);
        out
    }
}

impl rcgen::PublicKeyData for SimKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_sec1
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for SimKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let sig: Signature = self.signing.sign(msg);
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

fn derive_bytes<const N: usize>(seed: &[u8], label: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut filled = 0;
    let mut counter = 0u32;
    while filled < N {
        let digest = Sha256::new()
            .chain_update(SEED_LABEL)
            .chain_update(label.as_bytes())
            .chain_update([0])
            .chain_update(seed)
            .chain_update(counter.to_be_bytes())
            .finalize();
        let n = (N - filled).min(digest.len());
        out[filled..filled + n].copy_from_slice(&digest[..n]);
        filled += n;
        counter += 1;
    }
    out
}

// --- a few DER encoders for the SGX extension -------------------------------------------------------------

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &items.concat())
}

fn der_oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &arc in &arcs[2..] {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    der_tlv(0x06, &body)
}

fn der_uint(value: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> = value
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    der_tlv(0x02, &bytes)
}

const SGX_EXT: [u64; 7] = [1, 2, 840, 113741, 1, 13, 1];

fn sgx_oid(suffix: &[u64]) -> Vec<u8> {
    let mut arcs = SGX_EXT.to_vec();
    arcs.extend_from_slice(suffix);
    der_oid(&arcs)
}

/// The SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1).
fn sgx_extension(
    ppid: &[u8; 16],
    cpu_svn: &[u8; 16],
    pce_svn: u16,
    pce_id: [u8; 2],
    fmspc: &[u8; 6],
) -> Vec<u8> {
    let mut tcb: Vec<Vec<u8>> = cpu_svn
        .iter()
        .enumerate()
        .map(|(i, svn)| der_seq(&[sgx_oid(&[2, i as u64 + 1]), der_uint(u64::from(*svn))]))
        .collect();
    tcb.push(der_seq(&[sgx_oid(&[2, 17]), der_uint(u64::from(pce_svn))]));
    tcb.push(der_seq(&[sgx_oid(&[2, 18]), der_tlv(0x04, cpu_svn)]));
    der_seq(&[
        der_seq(&[sgx_oid(&[1]), der_tlv(0x04, ppid)]),
        der_seq(&[sgx_oid(&[2]), der_seq(&tcb)]),
        der_seq(&[sgx_oid(&[3]), der_tlv(0x04, &pce_id)]),
        der_seq(&[sgx_oid(&[4]), der_tlv(0x04, fmspc)]),
        // SGX type: Standard (0), an ENUMERATED.
        der_seq(&[sgx_oid(&[5]), der_tlv(0x0a, &[0])]),
    ])
}

// --- the PKI ------------------------------------------------------------------------------------------------

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, SIM_ORGANIZATION);
    dn
}

fn cert_params(
    seed: &[u8],
    label: &str,
    common_name: &str,
    ca: IsCa,
    usages: Vec<KeyUsagePurpose>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.is_ca = ca;
    params.key_usages = usages;
    params.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
    params.not_after = time::macros::datetime!(2049-12-31 23:59:59 UTC);
    let mut serial = derive_bytes::<16>(seed, &format!("serial/{label}"));
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

fn to_pem(der_bytes: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der_bytes.to_vec()))
}

fn offset_time(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn sim_err(what: &str, e: impl std::fmt::Display) -> TdxError {
    TdxError::SimPki(format!("{what}: {e}"))
}

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

/// Options of [`SimTdxPki::collateral_with`].
#[derive(Debug, Clone)]
pub struct SimCollateralOptions {
    /// Issue time of TCB info, QE identity and CRLs.
    pub issued: SystemTime,
    /// How long they stay valid (`nextUpdate - issueDate`).
    pub validity: Duration,
    /// List the PCK certificate as revoked in the PCK CRL.
    pub revoke_pck: bool,
}

/// A simulated Intel SGX/TDX PKI derived from a seed.
pub struct SimTdxPki {
    seed: Vec<u8>,
    root: SimKey,
    root_params: CertificateParams,
    root_der: Vec<u8>,
    pck_ca: SimKey,
    pck_ca_params: CertificateParams,
    pck_ca_der: Vec<u8>,
    pck: SimKey,
    pck_der: Vec<u8>,
    pck_serial: SerialNumber,
    tcb_signer: SimKey,
    tcb_signer_der: Vec<u8>,
    attestation: SimKey,
    qe_mr_signer: [u8; 32],
    qe_mr_enclave: [u8; 32],
    mr_seam: [u8; 48],
}

impl std::fmt::Debug for SimTdxPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTdxPki")
            .field("root_sha256", &hex::encode(Sha256::digest(&self.root_der)))
            .finish_non_exhaustive()
    }
}

/// File names inside a simulated PKI directory (prefixed, so that the SEV-SNP files can live beside them).
pub mod files {
    /// The seed (hex). Everything else follows from it.
    pub const SEED: &str = "tdx-seed.hex";
    /// The simulated root CA certificate (PEM): what verifiers are told to trust.
    pub const ROOT_CA: &str = "tdx-root-ca.pem";
    /// The PCK certificate chain (PEM, leaf first).
    pub const PCK_CHAIN: &str = "tdx-pck-chain.pem";
    /// Collateral valid for 30 days from when the directory was written.
    pub const COLLATERAL: &str = "tdx-collateral.json";
}

impl SimTdxPki {
    /// Derive the PKI from `seed` (any length; use at least 16 random bytes for anything shared).
    pub fn from_seed(seed: &[u8]) -> Result<Self, TdxError> {
        use KeyUsagePurpose::{ContentCommitment, CrlSign, DigitalSignature, KeyCertSign};
        let root = SimKey::derive(seed, "root-ca");
        let pck_ca = SimKey::derive(seed, "pck-platform-ca");
        let pck = SimKey::derive(seed, "pck");
        let tcb_signer = SimKey::derive(seed, "tcb-signing");
        let attestation = SimKey::derive(seed, "attestation-key");

        let root_params = cert_params(
            seed,
            "root-ca",
            "Simulated Intel SGX Root CA",
            IsCa::Ca(BasicConstraints::Unconstrained),
            vec![KeyCertSign, CrlSign],
        );
        let root_der = root_params
            .self_signed(&root)
            .map_err(|e| sim_err("root CA", e))?
            .der()
            .to_vec();
        let root_issuer = Issuer::from_params(&root_params, &root);

        let pck_ca_params = cert_params(
            seed,
            "pck-platform-ca",
            "Simulated Intel SGX PCK Platform CA",
            IsCa::Ca(BasicConstraints::Constrained(0)),
            vec![KeyCertSign, CrlSign],
        );
        let pck_ca_der = pck_ca_params
            .signed_by(&pck_ca, &root_issuer)
            .map_err(|e| sim_err("PCK CA", e))?
            .der()
            .to_vec();

        let mut pck_params = cert_params(
            seed,
            "pck",
            "Simulated Intel SGX PCK Certificate",
            IsCa::ExplicitNoCa,
            vec![DigitalSignature, ContentCommitment],
        );
        let ppid = derive_bytes::<16>(seed, "ppid");
        let ext = sgx_extension(&ppid, &SIM_CPU_SVN, SIM_PCE_SVN, [0, 0], &SIM_FMSPC);
        pck_params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(&SGX_EXT, ext));
        let pck_serial = pck_params
            .serial_number
            .clone()
            .ok_or_else(|| TdxError::SimPki("PCK certificate without serial".into()))?;
        let pck_ca_issuer = Issuer::from_params(&pck_ca_params, &pck_ca);
        let pck_der = pck_params
            .signed_by(&pck, &pck_ca_issuer)
            .map_err(|e| sim_err("PCK certificate", e))?
            .der()
            .to_vec();

        let tcb_params = cert_params(
            seed,
            "tcb-signing",
            "Simulated Intel SGX TCB Signing",
            IsCa::ExplicitNoCa,
            vec![DigitalSignature, ContentCommitment],
        );
        let tcb_signer_der = tcb_params
            .signed_by(&tcb_signer, &root_issuer)
            .map_err(|e| sim_err("TCB signing certificate", e))?
            .der()
            .to_vec();

        Ok(SimTdxPki {
            seed: seed.to_vec(),
            root,
            root_params,
            root_der,
            pck_ca,
            pck_ca_params,
            pck_ca_der,
            pck,
            pck_der,
            pck_serial,
            tcb_signer,
            tcb_signer_der,
            attestation,
            qe_mr_signer: derive_bytes(seed, "qe-mrsigner"),
            qe_mr_enclave: derive_bytes(seed, "qe-mrenclave"),
            mr_seam: derive_bytes(seed, "mrseam"),
        })
    }

    /// The simulated root CA certificate (DER): give it to [`super::TdxVerifier::with_root`].
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The simulated root CA certificate (PEM).
    pub fn root_pem(&self) -> String {
        to_pem(&self.root_der)
    }

    /// The PCK certificate chain (PEM: PCK certificate, PCK CA, root CA), as quotes carry it.
    pub fn pck_chain_pem(&self) -> String {
        [&self.pck_der, &self.pck_ca_der, &self.root_der]
            .iter()
            .map(|d| to_pem(d))
            .collect()
    }

    /// Collateral issued at `issued`, valid for 30 days.
    pub fn collateral(&self, issued: SystemTime) -> Result<Collateral, TdxError> {
        self.collateral_with(&SimCollateralOptions {
            issued,
            validity: Duration::from_secs(30 * 24 * 3600),
            revoke_pck: false,
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
            "tcbEvaluationDataNumber": 17,
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
            "tcbEvaluationDataNumber": 17,
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

    /// Write the PKI into `dir`: the seed, the root certificate, the PCK chain and collateral valid for 30 days
    /// from `now`. Files are created readable by the owner only where they hold secrets (the seed).
    pub fn write_to(&self, dir: &Path, now: SystemTime) -> Result<(), TdxError> {
        std::fs::create_dir_all(dir).map_err(|e| TdxError::io("creating", dir, e))?;
        let seed_path = dir.join(files::SEED);
        write_private(&seed_path, hex::encode(&self.seed).as_bytes())?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| TdxError::io("writing", path, e))
        };
        write(files::ROOT_CA, self.root_pem().as_bytes())?;
        write(files::PCK_CHAIN, self.pck_chain_pem().as_bytes())?;
        self.collateral(now)?.save(&dir.join(files::COLLATERAL))
    }

    /// Load a PKI written by [`Self::write_to`], checking that its root certificate matches the seed.
    pub fn load(dir: &Path) -> Result<Self, TdxError> {
        let seed_path = dir.join(files::SEED);
        let text = std::fs::read_to_string(&seed_path)
            .map_err(|e| TdxError::io("reading", &seed_path, e))?;
        let seed = hex::decode(text.trim())
            .map_err(|e| TdxError::SimPki(format!("{}: not hex: {e}", seed_path.display())))?;
        let pki = Self::from_seed(&seed)?;
        let root_path = dir.join(files::ROOT_CA);
        if let Ok(root_pem) = std::fs::read(&root_path) {
            let written = super::collateral::pem_certs("simulated root", &root_pem)?;
            if written.first().map(Vec::as_slice) != Some(pki.root_der()) {
                return Err(TdxError::SimPki(format!(
                    "{} does not match the seed in {}",
                    root_path.display(),
                    seed_path.display()
                )));
            }
        }
        Ok(pki)
    }
}

/// An [`Attester`] producing `sim-tdx` evidence for a fixed TD: quotes under a simulated Intel PKI, with
/// collateral embedded (regenerated when less than a day of its 30-day validity remains).
pub struct SimTdxAttester {
    pki: std::sync::Arc<SimTdxPki>,
    /// The TD every quote describes (its `report_data` is replaced by the requested one).
    pub td: SimTdReport,
    collateral: std::sync::Mutex<Option<Collateral>>,
}

impl std::fmt::Debug for SimTdxAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTdxAttester")
            .field("pki", &self.pki)
            .field("td", &self.td)
            .finish_non_exhaustive()
    }
}

impl SimTdxAttester {
    /// An attester for `td` under `pki`.
    pub fn new(pki: std::sync::Arc<SimTdxPki>, td: SimTdReport) -> Self {
        SimTdxAttester {
            pki,
            td,
            collateral: std::sync::Mutex::new(None),
        }
    }

    fn current_collateral(&self) -> Result<Collateral, TdxError> {
        let now = SystemTime::now();
        let mut slot = self
            .collateral
            .lock()
            .map_err(|_| TdxError::SimPki("collateral lock poisoned".into()))?;
        if let Some(c) = slot.as_ref() {
            if c.window(&[])
                .is_ok_and(|w| w.fresh_at(unix_secs(now), Duration::from_secs(24 * 3600)))
            {
                return Ok(c.clone());
            }
        }
        // Issued a minute in the past so that verifiers with a slightly slow clock accept it.
        let c = self.pki.collateral(now - Duration::from_secs(60))?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

impl Attester for SimTdxAttester {
    fn platform(&self) -> Platform {
        Platform::SimTdx
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        let quote = self
            .pki
            .quote(&SimTdReport {
                report_data: *report_data,
                ..self.td.clone()
            })
            .map_err(|e| AttestError::Device(e.to_string()))?;
        let collateral = self
            .current_collateral()
            .map_err(|e| AttestError::Device(e.to_string()))?;
        Ok(Evidence::Tdx(TdxEvidence {
            quote,
            collateral: Some(collateral),
        }))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TdxError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TdxError::io("writing", path, e))?;
    file.write_all(bytes)
        .map_err(|e| TdxError::io("writing", path, e))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TdxError> {
    std::fs::write(path, bytes).map_err(|e| TdxError::io("writing", path, e))
}
