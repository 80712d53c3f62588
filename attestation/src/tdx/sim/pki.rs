//! The simulated Intel PKI: a root CA, a PCK platform CA, a PCK certificate with the SGX extension `dcap-qvl` reads,
//! a TCB signing certificate, the quoting enclave's attestation key and identity, all derived from a seed; and
//! the directory it is stored in.

use std::path::Path;
use std::time::SystemTime;

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};

use super::{SEED_LABEL, SIM_CPU_SVN, SIM_FMSPC, SIM_ORGANIZATION, SIM_PCE_SVN};
use crate::tdx::error::TdxError;

/// A P-256 key usable both for raw DCAP signatures and, through `rcgen`, for certificates and CRLs.
pub(super) struct SimKey {
    signing: SigningKey,
    public_sec1: Vec<u8>,
}

impl SimKey {
    pub(super) fn derive(seed: &[u8], label: &str) -> Self {
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
    pub(super) fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        let sig: Signature = self.signing.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }

    /// The public key as X || Y (64 bytes), as DCAP quotes carry the attestation key.
    pub(super) fn public_xy(&self) -> [u8; 64] {
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

pub(super) fn derive_bytes<const N: usize>(seed: &[u8], label: &str) -> [u8; N] {
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

pub(super) fn to_pem(der_bytes: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der_bytes.to_vec()))
}

pub(super) fn sim_err(what: &str, e: impl std::fmt::Display) -> TdxError {
    TdxError::SimPki(format!("{what}: {e}"))
}

/// A simulated Intel SGX/TDX PKI derived from a seed.
pub struct SimTdxPki {
    pub(super) seed: Vec<u8>,
    pub(super) root: SimKey,
    pub(super) root_params: CertificateParams,
    pub(super) root_der: Vec<u8>,
    pub(super) pck_ca: SimKey,
    pub(super) pck_ca_params: CertificateParams,
    pub(super) pck_ca_der: Vec<u8>,
    pub(super) pck: SimKey,
    pub(super) pck_der: Vec<u8>,
    pub(super) pck_serial: SerialNumber,
    pub(super) tcb_signer: SimKey,
    pub(super) tcb_signer_der: Vec<u8>,
    pub(super) attestation: SimKey,
    pub(super) qe_mr_signer: [u8; 32],
    pub(super) qe_mr_enclave: [u8; 32],
    pub(super) mr_seam: [u8; 48],
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

    /// The simulated root CA certificate (DER): give it to [`crate::tdx::TdxVerifier::with_root`].
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
            let written = crate::tdx::collateral::pem_certs("simulated root", &root_pem)?;
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
