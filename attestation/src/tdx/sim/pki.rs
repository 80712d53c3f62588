//! The simulated Intel PKI: a root CA, a PCK platform CA, a PCK certificate with the SGX extension `dcap-qvl` reads,
//! a TCB signing certificate, the quoting enclave's attestation key and identity, all derived from a seed; and
//! the directory it is stored in.

use std::path::Path;
use std::time::SystemTime;

use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Tag};
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
            let digest = seed_block(seed, label, counter);
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

/// Block `counter` of the bytes derived from `seed` for `label`: SHA-256 over the label and the seed.
fn seed_block(seed: &[u8], label: &str, counter: u32) -> [u8; 32] {
    Sha256::new()
        .chain_update(SEED_LABEL)
        .chain_update(label.as_bytes())
        .chain_update([0])
        .chain_update(seed)
        .chain_update(counter.to_be_bytes())
        .finalize()
        .into()
}

/// `N` bytes derived from `seed` for `label`.
pub(super) fn derive_bytes<const N: usize>(seed: &[u8], label: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut filled = 0;
    let mut counter = 0u32;
    while filled < N {
        let digest = seed_block(seed, label, counter);
        let n = (N - filled).min(digest.len());
        out[filled..filled + n].copy_from_slice(&digest[..n]);
        filled += n;
        counter += 1;
    }
    out
}

// --- the SGX extension ------------------------------------------------------------------------------------------

/// OID arc of Intel's SGX extensions, 1.2.840.113741.1.13.1.
const SGX_EXT: [u32; 7] = [1, 2, 840, 113741, 1, 13, 1];

/// One `SEQUENCE { id, value }` of the SGX extension.
#[derive(der::Sequence)]
struct SgxEntry {
    id: ObjectIdentifier,
    value: Any,
}

impl SgxEntry {
    /// An entry under `SGX_EXT.<suffix>` whose value is `value` encoded in DER.
    fn new(suffix: &[u32], value: &impl Encode) -> der::Result<Self> {
        Ok(SgxEntry {
            id: ObjectIdentifier::from_arcs(SGX_EXT.iter().chain(suffix).copied())?,
            value: Any::from_der(&value.to_der()?)?,
        })
    }
}

/// The SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1): PPID, TCB (16 CPU SVN components, PCESVN,
/// CPUSVN), PCE-ID, FMSPC and SGX type (Standard).
fn sgx_extension(
    ppid: &[u8; 16],
    cpu_svn: &[u8; 16],
    pce_svn: u16,
    pce_id: [u8; 2],
    fmspc: &[u8; 6],
) -> der::Result<Vec<u8>> {
    let octets = |bytes: &[u8]| OctetString::new(bytes);
    let mut tcb = (1u32..)
        .zip(cpu_svn)
        .map(|(i, svn)| SgxEntry::new(&[2, i], svn))
        .collect::<der::Result<Vec<_>>>()?;
    tcb.push(SgxEntry::new(&[2, 17], &pce_svn)?);
    tcb.push(SgxEntry::new(&[2, 18], &octets(cpu_svn)?)?);
    vec![
        SgxEntry::new(&[1], &octets(ppid)?)?,
        SgxEntry::new(&[2], &tcb)?,
        SgxEntry::new(&[3], &octets(&pce_id)?)?,
        SgxEntry::new(&[4], &octets(fmspc)?)?,
        // SGX type: Standard (0), an ENUMERATED.
        SgxEntry::new(&[5], &Any::new(Tag::Enumerated, [0u8])?)?,
    ]
    .to_der()
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

/// The DER of the certificate `params` describes for `key`, signed by `issuer`; `what` names it in errors.
fn signed_der<S: rcgen::SigningKey>(
    params: &CertificateParams,
    key: &SimKey,
    issuer: &Issuer<'_, S>,
    what: &str,
) -> Result<Vec<u8>, TdxError> {
    Ok(params
        .signed_by(key, issuer)
        .map_err(|e| sim_err(what, e))?
        .der()
        .to_vec())
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
        let pck_ca_der = signed_der(&pck_ca_params, &pck_ca, &root_issuer, "PCK CA")?;

        let mut pck_params = cert_params(
            seed,
            "pck",
            "Simulated Intel SGX PCK Certificate",
            IsCa::ExplicitNoCa,
            vec![DigitalSignature, ContentCommitment],
        );
        let ppid = derive_bytes::<16>(seed, "ppid");
        let ext = sgx_extension(&ppid, &SIM_CPU_SVN, SIM_PCE_SVN, [0, 0], &SIM_FMSPC)
            .map_err(|e| sim_err("SGX extension", e))?;
        pck_params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &SGX_EXT.map(u64::from),
                ext,
            ));
        let pck_serial = pck_params
            .serial_number
            .clone()
            .ok_or_else(|| TdxError::SimPki("PCK certificate without serial".into()))?;
        let pck_ca_issuer = Issuer::from_params(&pck_ca_params, &pck_ca);
        let pck_der = signed_der(&pck_params, &pck, &pck_ca_issuer, "PCK certificate")?;

        let tcb_params = cert_params(
            seed,
            "tcb-signing",
            "Simulated Intel SGX TCB Signing",
            IsCa::ExplicitNoCa,
            vec![DigitalSignature, ContentCommitment],
        );
        let tcb_signer_der = signed_der(
            &tcb_params,
            &tcb_signer,
            &root_issuer,
            "TCB signing certificate",
        )?;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sgx_extension_keeps_its_encoding() {
        let mut cpu_svn = SIM_CPU_SVN;
        cpu_svn[15] = 0xff;
        let ppid: [u8; 16] = std::array::from_fn(|i| i as u8);
        let der_bytes = sgx_extension(&ppid, &cpu_svn, SIM_PCE_SVN, [0, 0], &SIM_FMSPC).unwrap();
        // The bytes the hand-written encoder produced before `der` wrote them.
        assert_eq!(hex::encode(der_bytes), EXPECTED);
    }

    const EXPECTED: &str = "308201c1301e060a2a864886f84d010d01010410000102030405060708090a0b0c0d0e0f30820164060a2a864886f84d010d0102308201543010060b2a864886f84d010d0102010201043010060b2a864886f84d010d0102020201043010060b2a864886f84d010d0102030201023010060b2a864886f84d010d0102040201023010060b2a864886f84d010d0102050201033010060b2a864886f84d010d0102060201013010060b2a864886f84d010d0102070201003010060b2a864886f84d010d0102080201033010060b2a864886f84d010d0102090201003010060b2a864886f84d010d01020a0201003010060b2a864886f84d010d01020b0201003010060b2a864886f84d010d01020c0201003010060b2a864886f84d010d01020d0201003010060b2a864886f84d010d01020e0201003010060b2a864886f84d010d01020f0201003011060b2a864886f84d010d010210020200ff3010060b2a864886f84d010d01021102010d301f060b2a864886f84d010d0102120410040402020301000300000000000000ff3010060a2a864886f84d010d0103040200003014060a2a864886f84d010d010404065e5170000000300f060a2a864886f84d010d01050a0100";
}
