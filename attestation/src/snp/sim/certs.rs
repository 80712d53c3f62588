//! The simulated AMD key hierarchy: ARK, ASK and VCEK (and an ASVK with a VLEK), derived from a seed, and its PEM
//! files.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256, Sha384};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::UtcTime;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use super::{build_err, files, SimError, SIM_ORGANIZATION, SIM_TCB};
use crate::claims::SnpTcb;
use crate::snp::cert::{endorsement, AmdCert};

/// A simulated AMD PKI with one simulated chip: what is needed to sign reports and present their certificates.
#[derive(Clone)]
pub struct SimSnpPki {
    pub(super) ark_der: Vec<u8>,
    pub(super) ask_der: Vec<u8>,
    pub(super) vcek_der: Vec<u8>,
    pub(super) vcek_key: p384::ecdsa::SigningKey,
    pub(super) chip_id: [u8; 64],
    pub(super) tcb: SnpTcb,
    pub(super) vlek: Option<SimVlek>,
}

/// The simulated cloud-provider key: an ASVK (sharing the ASK's RSA key, signed by the ARK) and a VLEK it signs.
#[derive(Clone)]
pub(super) struct SimVlek {
    pub(super) asvk_der: Vec<u8>,
    pub(super) vlek_der: Vec<u8>,
    pub(super) key: p384::ecdsa::SigningKey,
}

impl std::fmt::Debug for SimSnpPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSnpPki")
            .field("chip_id", &hex::encode(self.chip_id))
            .field("tcb", &self.tcb)
            .finish()
    }
}

const OID_PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
const OID_BL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_HWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
const AMD_EXT_OIDS: [ObjectIdentifier; 6] = [
    OID_PRODUCT_NAME,
    OID_BL,
    OID_TEE,
    OID_SNP,
    OID_UCODE,
    OID_HWID,
];

/// An AMD VCEK extension whose value is written verbatim (the `K`th of [`AMD_EXT_OIDS`]).
struct AmdExt<const K: usize>(Vec<u8>);

impl<const K: usize> x509_cert::der::oid::AssociatedOid for AmdExt<K> {
    const OID: ObjectIdentifier = AMD_EXT_OIDS[K];
}

impl<const K: usize> Encode for AmdExt<K> {
    fn encoded_len(&self) -> x509_cert::der::Result<x509_cert::der::Length> {
        x509_cert::der::Length::try_from(self.0.len())
    }

    fn encode(&self, writer: &mut impl x509_cert::der::Writer) -> x509_cert::der::Result<()> {
        writer.write(&self.0)
    }
}

impl<const K: usize> AsExtension for AmdExt<K> {
    fn critical(&self, _: &Name, _: &[Extension]) -> bool {
        false
    }
}

fn utc(unix: u64) -> Result<Time, SimError> {
    UtcTime::from_unix_duration(Duration::from_secs(unix))
        .map(Time::UtcTime)
        .map_err(|e| build_err("validity")(e.to_string()))
}

/// 2024-01-01T00:00:00Z.
const NOT_BEFORE: u64 = 1_704_067_200;
/// 2049-01-01T00:00:00Z (ARK, ASK).
const CA_NOT_AFTER: u64 = 2_493_072_000;
/// 2031-01-01T00:00:00Z (VCEK).
const VCEK_NOT_AFTER: u64 = 1_924_992_000;

fn name(org: &str, cn: &str) -> Result<Name, SimError> {
    Name::from_str(&format!(
        "CN={cn},O={org},ST=CA,L=Santa Clara,C=US,OU=Engineering"
    ))
    .map_err(|e| build_err("certificate name")(e.to_string()))
}

fn spl(v: u8) -> Vec<u8> {
    if v < 0x80 {
        vec![0x02, 0x01, v]
    } else {
        vec![0x02, 0x02, 0x00, v]
    }
}

impl SimSnpPki {
    /// Derive a simulated PKI from `seed` (two RSA-4096 keys: a few seconds in an optimised build).
    pub fn generate(seed: &str) -> Result<Self, SimError> {
        Self::generate_with(seed, SIM_ORGANIZATION, 4096)
    }

    /// Like [`SimSnpPki::generate`] with RSA-2048 ARK and ASK keys: the same structure and checks, generated about
    /// ten times faster (for tests that need several hierarchies).
    pub fn generate_small(seed: &str) -> Result<Self, SimError> {
        Self::generate_with(seed, SIM_ORGANIZATION, 2048)
    }

    /// A self-made hierarchy that copies AMD's certificate names ("Advanced Micro Devices", "ARK-Milan",
    /// "SEV-Milan"): what a forger would build. Verifiers must refuse its evidence; tests use it to show they do.
    pub fn generate_impersonating_amd(seed: &str) -> Result<Self, SimError> {
        Self::generate_with(seed, "Advanced Micro Devices", 2048)
    }

    fn generate_with(seed: &str, org: &str, rsa_bits: usize) -> Result<Self, SimError> {
        let mut rng = ChaCha20Rng::from_seed(
            Sha256::digest(format!("tee-gateway sim-snp pki v1:{seed}")).into(),
        );
        let ark_key = rsa::RsaPrivateKey::new(&mut rng, rsa_bits)
            .map_err(|e| build_err("ARK key")(e.to_string()))?;
        let ask_key = rsa::RsaPrivateKey::new(&mut rng, rsa_bits)
            .map_err(|e| build_err("ASK key")(e.to_string()))?;
        let vcek_key = p384::ecdsa::SigningKey::random(&mut rng);
        let mut chip_id = [0u8; 64];
        rng.fill_bytes(&mut chip_id);
        let tcb = SIM_TCB;

        let ark_signer = rsa::pss::SigningKey::<Sha384>::new(ark_key.clone());
        let ask_signer = rsa::pss::SigningKey::<Sha384>::new(ask_key.clone());
        let spki_of = |der: x509_cert::der::Document| {
            SubjectPublicKeyInfoOwned::from_der(der.as_bytes())
                .map_err(|e| build_err("public key")(e.to_string()))
        };
        let ark_name = name(org, "ARK-Milan")?;
        let ask_name = name(org, "SEV-Milan")?;
        let validity = |end| -> Result<Validity, SimError> {
            Ok(Validity {
                not_before: utc(NOT_BEFORE)?,
                not_after: utc(end)?,
            })
        };

        let rsa_spki = |key: &rsa::RsaPrivateKey, what: &'static str| {
            spki_of(
                key.to_public_key()
                    .to_public_key_der()
                    .map_err(|e| build_err(what)(e.to_string()))?,
            )
        };
        // A CA certificate signed with the ARK key: the ARK itself (no issuer), and the ASK and ASVK below it.
        let ca = |rng: &mut ChaCha20Rng,
                  issuer: Option<&Name>,
                  serial: u32,
                  subject: &Name,
                  spki: &SubjectPublicKeyInfoOwned,
                  what: &'static str| {
            let profile = match issuer {
                None => Profile::Root,
                Some(issuer) => Profile::SubCA {
                    issuer: issuer.clone(),
                    path_len_constraint: Some(0),
                },
            };
            CertificateBuilder::new(
                profile,
                SerialNumber::from(serial),
                validity(CA_NOT_AFTER)?,
                subject.clone(),
                spki.clone(),
                &ark_signer,
            )
            .map_err(|e| build_err(what)(e.to_string()))?
            .build_with_rng::<rsa::pss::Signature>(rng)
            .map_err(|e| build_err(what)(e.to_string()))
        };

        let ark_spki = rsa_spki(&ark_key, "ARK key")?;
        let ark = ca(&mut rng, None, 1, &ark_name, &ark_spki, "ARK")?;
        let ask_spki = rsa_spki(&ask_key, "ASK key")?;
        let ask = ca(&mut rng, Some(&ark_name), 2, &ask_name, &ask_spki, "ASK")?;

        // A P-384 leaf (VCEK or VLEK) signed with the ASK key, carrying AMD's product and TCB extensions.
        let leaf = |issuer: Name,
                    serial: u32,
                    subject: &str,
                    key: &p384::ecdsa::SigningKey,
                    what: &'static str| {
            let spki = spki_of(
                p384::PublicKey::from(key.verifying_key())
                    .to_public_key_der()
                    .map_err(|e| build_err(what)(e.to_string()))?,
            )?;
            let mut builder = CertificateBuilder::new(
                Profile::Leaf {
                    issuer,
                    enable_key_agreement: false,
                    enable_key_encipherment: false,
                },
                SerialNumber::from(serial),
                validity(VCEK_NOT_AFTER)?,
                name(org, subject)?,
                spki,
                &ask_signer,
            )
            .map_err(|e| build_err(what)(e.to_string()))?;
            let product = b"Milan-B0";
            let mut product_der = vec![0x16, product.len() as u8];
            product_der.extend_from_slice(product);
            for r in [
                builder.add_extension(&AmdExt::<0>(product_der)),
                builder.add_extension(&AmdExt::<1>(spl(tcb.bootloader))),
                builder.add_extension(&AmdExt::<2>(spl(tcb.tee))),
                builder.add_extension(&AmdExt::<3>(spl(tcb.snp))),
                builder.add_extension(&AmdExt::<4>(spl(tcb.microcode))),
            ] {
                r.map_err(|e| build_err(what)(e.to_string()))?;
            }
            Ok::<_, SimError>(builder)
        };

        let mut vcek = leaf(ask_name, 3, "SEV-VCEK", &vcek_key, "VCEK")?;
        vcek.add_extension(&AmdExt::<5>(chip_id.to_vec()))
            .map_err(|e| build_err("VCEK extension")(e.to_string()))?;
        let vcek = vcek
            .build_with_rng::<rsa::pss::Signature>(&mut rng)
            .map_err(|e| build_err("VCEK")(e.to_string()))?;

        // VLEK side, drawn after everything above so that the VCEK side of a seed never changes.
        let asvk_name = name(org, "SEV-VLEK-Milan")?;
        let asvk = ca(&mut rng, Some(&ark_name), 4, &asvk_name, &ask_spki, "ASVK")?;
        let vlek_key = p384::ecdsa::SigningKey::random(&mut rng);
        let vlek = leaf(asvk_name, 5, "SEV-VLEK", &vlek_key, "VLEK")?;
        let vlek = vlek
            .build_with_rng::<rsa::pss::Signature>(&mut rng)
            .map_err(|e| build_err("VLEK")(e.to_string()))?;

        let der = |c: &x509_cert::Certificate, what| {
            c.to_der().map_err(|e| build_err(what)(e.to_string()))
        };
        Ok(SimSnpPki {
            ark_der: der(&ark, "ARK")?,
            ask_der: der(&ask, "ASK")?,
            vcek_der: der(&vcek, "VCEK")?,
            vcek_key,
            chip_id,
            tcb,
            vlek: Some(SimVlek {
                asvk_der: der(&asvk, "ASVK")?,
                vlek_der: der(&vlek, "VLEK")?,
                key: vlek_key,
            }),
        })
    }

    /// DER of the simulated ARK (what a verifier must be told to trust).
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }

    /// The simulated ARK as PEM.
    pub fn ark_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.ark_der.clone()))
    }

    /// DER of the simulated ASK.
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }

    /// DER of the simulated VCEK.
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// The simulated chip's CHIP_ID.
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.chip_id
    }

    /// Write the PKI as PEM files into `dir` (created if missing); see [`files`].
    pub fn write_pem(&self, dir: &Path) -> Result<(), SimError> {
        std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let cert = |der: &[u8]| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
        let key = self
            .vcek_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| build_err("VCEK key")(e.to_string()))?;
        for (file, text) in [
            (files::ARK, cert(&self.ark_der)),
            (files::ASK, cert(&self.ask_der)),
            (files::VCEK, cert(&self.vcek_der)),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).map_err(|source| SimError::Io { path, source })?;
        }
        // The simulated chip's private key: readable by its owner only, from the moment it exists.
        let path = dir.join(files::VCEK_KEY);
        write_private(&path, key.as_bytes()).map_err(|source| SimError::Io { path, source })
    }

    /// Load a PKI written by [`SimSnpPki::write_pem`].
    pub fn load_pem(dir: &Path) -> Result<Self, SimError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| SimError::Io { path, source })
        };
        let invalid = |file: &str, reason: String| SimError::Invalid {
            path: dir.join(file),
            reason,
        };
        let cert = |file: &str| -> Result<Vec<u8>, SimError> {
            let p = pem::parse(read(file)?).map_err(|e| invalid(file, e.to_string()))?;
            Ok(p.into_contents())
        };
        let ark_der = cert(files::ARK)?;
        let ask_der = cert(files::ASK)?;
        let vcek_der = cert(files::VCEK)?;
        let vcek_key = p384::ecdsa::SigningKey::from_pkcs8_pem(&read(files::VCEK_KEY)?)
            .map_err(|e| invalid(files::VCEK_KEY, e.to_string()))?;
        let vcek = AmdCert::from_der("VCEK", &vcek_der)
            .map_err(|e| invalid(files::VCEK, e.to_string()))?;
        if vcek.sev.public_key_sec1() != vcek_key.verifying_key().to_encoded_point(false).as_bytes()
        {
            return Err(invalid(
                files::VCEK_KEY,
                "the key does not belong to the VCEK certificate".into(),
            ));
        }
        let e = endorsement(&vcek).map_err(|e| invalid(files::VCEK, e.to_string()))?;
        let chip_id: [u8; 64] = e
            .hw_id
            .as_deref()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| invalid(files::VCEK, "hwID is not 64 bytes".into()))?;
        Ok(SimSnpPki {
            ark_der,
            ask_der,
            vcek_der,
            vcek_key,
            chip_id,
            tcb: e.tcb,
            vlek: None,
        })
    }
}

/// Writes `bytes` to `path`, created (or truncated) with mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: narrow it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::snp::sim::SimReportRequest;
    use crate::{Evidence, TrustAnchors, Verifier, VerifyError};

    use crate::test_support::pki;

    fn verify(p: &SimSnpPki) -> Result<crate::Claims, VerifyError> {
        let v = Verifier::new(
            TrustAnchors::production()
                .with_sim_snp_ark(p.ark_der())
                .unwrap(),
        );
        let req = SimReportRequest {
            measurement: [1; 48],
            host_data: [2; 32],
            ..SimReportRequest::default()
        };
        v.verify_unbound(
            &Evidence::Snp(p.evidence(&req).unwrap()),
            UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        )
    }

    #[test]
    fn vcek_endorsement_is_compared_with_the_report() {
        verify(&pki()).unwrap();
        let mut other_tcb = (*pki()).clone();
        other_tcb.tcb.snp = 9;
        let err = verify(&other_tcb).unwrap_err();
        assert_eq!(
            err,
            VerifyError::EndorsementMismatch {
                cert: "VCEK",
                field: "TCB SNP SPL",
                expected: "8".into(),
                actual: "9".into()
            }
        );
        let mut other_chip = (*pki()).clone();
        other_chip.chip_id[5] ^= 1;
        let err = verify(&other_chip).unwrap_err();
        assert!(
            matches!(err, VerifyError::EndorsementMismatch { field: "hwID", .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(&hex::encode(pki().chip_id)),
            "{err}"
        );
    }

    #[test]
    fn pem_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("sim-snp-pem-{}", std::process::id()));
        pki().write_pem(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(files::VCEK_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "the private key is readable by its owner only"
            );
        }
        let loaded = SimSnpPki::load_pem(&dir).unwrap();
        assert_eq!(loaded.ark_der(), pki().ark_der());
        assert_eq!(loaded.chip_id(), pki().chip_id());
        verify(&loaded).unwrap();
        // A key that does not belong to the VCEK is refused.
        let other = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
        std::fs::write(
            dir.join(files::VCEK_KEY),
            other.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            SimSnpPki::load_pem(&dir),
            Err(SimError::Invalid { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
