//! Certificates for tests: a web PKI (a CA and the server certificates it issues, as PEM files) for the
//! client-facing TLS of the gateway, and the simulated attestation PKI (SEV-SNP and TDX), generated once per test
//! process because its RSA keys are slow to make.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use attestation::{SimSnpPki, SimTdxPki};

/// The seed of the simulated attestation PKI every test of a process shares.
const SIM_SEED: &str = "tee-gateway tests";

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A certificate authority issuing server certificates (ECDSA P-256), its files in a directory of the test's.
pub struct WebPki {
    dir: PathBuf,
    /// The CA certificate (PEM), for clients to trust.
    pub ca_pem: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for WebPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPki")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl WebPki {
    /// A new CA named `name`, its certificate written to `dir/ca.pem` (`dir` is created if missing).
    pub fn new(dir: &Path, name: &str) -> WebPki {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let ca_key = rcgen::KeyPair::generate().expect("generating the CA key");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).expect("self-signing the CA");
        let ca_pem = dir.join("ca.pem");
        write(&ca_pem, ca.pem());
        WebPki {
            dir: dir.to_path_buf(),
            ca_pem,
            issuer: rcgen::Issuer::new(params, ca_key),
        }
    }

    /// Issues a certificate for the DNS `names` with common name `cn`, written as `file.crt` and `file.key`.
    pub fn issue(&self, file: &str, cn: &str, names: &[&str]) -> CertFiles {
        let key = rcgen::KeyPair::generate().expect("generating a key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("certificate parameters for {names:?}: {e}"));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a certificate");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        write(&files.cert, cert.pem());
        write(&files.key, key.serialize_pem());
        files
    }
}

fn write(path: &Path, text: String) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The simulated SEV-SNP PKI of this test process (small keys; made on first use).
pub fn sim_snp() -> Arc<SimSnpPki> {
    static PKI: OnceLock<Arc<SimSnpPki>> = OnceLock::new();
    PKI.get_or_init(|| {
        Arc::new(SimSnpPki::generate_small(SIM_SEED).expect("generating the simulated SNP PKI"))
    })
    .clone()
}

/// Writes the simulated SEV-SNP and TDX PKIs of this test process into `dir`, as the programs' `sim_pki` and
/// `trusted_sim_roots` settings read them.
pub fn write_sim_pki(dir: &Path) {
    sim_snp()
        .write_pem(dir)
        .unwrap_or_else(|e| panic!("writing the simulated SNP PKI to {}: {e}", dir.display()));
    SimTdxPki::from_seed(SIM_SEED.as_bytes())
        .expect("the simulated TDX PKI")
        .write_to(dir, std::time::SystemTime::now())
        .unwrap_or_else(|e| panic!("writing the simulated TDX PKI to {}: {e}", dir.display()));
}
