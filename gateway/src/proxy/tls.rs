//! TLS termination: certificates loaded from PEM files, chosen by server name, reloaded when the files change.
//!
//! Each configured certificate serves the DNS names in its subject alternative names, exact (`a.example.org`)
//! or wildcard (`*.example.org`, one label). An exact name wins over a wildcard. The files are checked for
//! changes by [`CertStore::reload_if_changed`]; a reload that fails keeps the certificates already loaded.
//! Server configurations share one session cache and one ticketer, so clients resume sessions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or holds no PEM object of the expected kind.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The certificate could not be parsed.
    #[error("{path}: certificate cannot be parsed: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The certificate names no DNS name.
    #[error("{0}: certificate has no DNS subject alternative name")]
    NoNames(PathBuf),
    /// The key is of an unsupported type.
    #[error("{path}: unsupported private key: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("{0}: private key does not match the certificate")]
    KeyMismatch(PathBuf),
}

#[derive(Debug, Default)]
struct Loaded {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    stamps: Vec<Option<(SystemTime, u64)>>,
}

/// The certificates the gateway terminates TLS with.
#[derive(Debug)]
pub struct CertStore {
    files: Vec<CertificateFiles>,
    loaded: RwLock<Arc<Loaded>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn load_one(files: &CertificateFiles) -> Result<(Vec<String>, Arc<CertifiedKey>), CertError> {
    let file_err = |path: &Path, reason: String| CertError::File {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_err(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&files.cert, e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| file_err(&files.cert, "no CERTIFICATE in file".into()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_err(&files.key, e.to_string()))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CertError::Key {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
    let names = dns_names(leaf).map_err(|reason| CertError::Certificate {
        path: files.cert.clone(),
        reason,
    })?;
    if names.is_empty() {
        return Err(CertError::NoNames(files.cert.clone()));
    }
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertError::KeyMismatch(files.key.clone())),
    }
    Ok((names, Arc::new(certified)))
}

fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| e.to_string())?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

impl CertStore {
    /// Loads every certificate; fails on the first file that does not load.
    pub fn load(files: Vec<CertificateFiles>) -> Result<Self, CertError> {
        let loaded = Self::load_all(&files)?;
        Ok(CertStore {
            files,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    fn load_all(files: &[CertificateFiles]) -> Result<Loaded, CertError> {
        let mut loaded = Loaded::default();
        for f in files {
            let stamp_before = stamp(&f.cert)
                .zip(stamp(&f.key))
                .map(|(c, k)| (c.0.max(k.0), c.1 + k.1));
            let (names, key) = load_one(f)?;
            for name in names {
                match name.strip_prefix("*.") {
                    Some(parent) => loaded.wildcard.insert(parent.to_owned(), key.clone()),
                    None => loaded.exact.insert(name, key.clone()),
                };
            }
            loaded.stamps.push(stamp_before);
        }
        Ok(loaded)
    }

    fn current_stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.files
            .iter()
            .map(|f| {
                stamp(&f.cert)
                    .zip(stamp(&f.key))
                    .map(|(c, k)| (c.0.max(k.0), c.1 + k.1))
            })
            .collect()
    }

    /// Reloads every certificate now. On failure the certificates already loaded stay in use.
    pub fn reload(&self) -> Result<(), CertError> {
        let loaded = Self::load_all(&self.files)?;
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Reloads if any file changed since the last load; returns whether it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, CertError> {
        let before = self.snapshot().stamps.clone();
        if before == self.current_stamps() {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    fn snapshot(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The certificate for a server name: an exact match, else a wildcard one label up.
    pub fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let loaded = self.snapshot();
        if let Some(k) = loaded.exact.get(&name) {
            return Some(k.clone());
        }
        let (_, parent) = name.split_once('.')?;
        loaded.wildcard.get(parent).cloned()
    }

    /// Every name served (wildcards written `*.parent`), sorted.
    pub fn names(&self) -> Vec<String> {
        let loaded = self.snapshot();
        let mut names: Vec<String> = loaded
            .exact
            .keys()
            .cloned()
            .chain(loaded.wildcard.keys().map(|p| format!("*.{p}")))
            .collect();
        names.sort();
        names
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name()?)
    }
}

/// TLS server configurations for the terminating modes, sharing certificates and session state.
#[derive(Debug, Clone)]
pub struct TerminationConfigs {
    /// ALPN `http/1.1` (no suffix).
    pub http1: Arc<ServerConfig>,
    /// ALPN `h2` (`g` suffix).
    pub h2: Arc<ServerConfig>,
}

impl TerminationConfigs {
    /// Builds both configurations over `certs`, with a shared session cache of `session_cache` entries and
    /// session tickets.
    pub fn new(certs: Arc<CertStore>, session_cache: usize) -> Result<Self, rustls::Error> {
        let cache = ServerSessionMemoryCache::new(session_cache);
        let ticketer = rustls::crypto::ring::Ticketer::new()?;
        let build = |alpn: &[u8]| {
            let mut c = ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(certs.clone());
            c.alpn_protocols = vec![alpn.to_vec()];
            c.session_storage = cache.clone();
            c.ticketer = ticketer.clone();
            Arc::new(c)
        };
        Ok(TerminationConfigs {
            http1: build(b"http/1.1"),
            h2: build(b"h2"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, file: &str, names: &[&str]) -> CertificateFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CertificateFiles {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn tempdir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("tee-gateway-tls-{tag}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn exact_names_win_over_wildcards_across_base_domains() {
        let dir = tempdir("names");
        let wild_a = write_cert(dir.path(), "a", &["*.apps.example.org"]);
        let wild_b = write_cert(dir.path(), "b", &["*.example.net"]);
        let exact = write_cert(dir.path(), "gw", &["gateway.apps.example.org"]);
        let store = CertStore::load(vec![wild_a, wild_b, exact]).unwrap();
        let exact_key = store.find("gateway.apps.example.org").unwrap();
        let wild_key = store.find("deadbeef11.apps.example.org").unwrap();
        assert!(!Arc::ptr_eq(&exact_key, &wild_key));
        assert!(Arc::ptr_eq(
            &store.find("DEADBEEF11.Apps.Example.Org").unwrap(),
            &wild_key
        ));
        assert!(store.find("deadbeef11.example.net").is_some());
        // A wildcard covers one label only.
        assert!(store.find("a.b.apps.example.org").is_none());
        assert!(store.find("apps.example.org").is_none());
        assert_eq!(
            store.names(),
            [
                "*.apps.example.org",
                "*.example.net",
                "gateway.apps.example.org"
            ]
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_file_named() {
        let dir = tempdir("bad");
        let a = write_cert(dir.path(), "a", &["*.apps.example.org"]);
        let b = write_cert(dir.path(), "b", &["*.example.net"]);
        let crossed = CertificateFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        assert!(matches!(
            CertStore::load(vec![crossed]),
            Err(CertError::KeyMismatch(_))
        ));
        let missing = CertificateFiles {
            cert: dir.path().join("nope.crt"),
            key: a.key.clone(),
        };
        let err = CertStore::load(vec![missing]).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
        let no_names = write_cert(dir.path(), "c", &[]);
        assert!(matches!(
            CertStore::load(vec![no_names]),
            Err(CertError::NoNames(_))
        ));
        // A reload that fails keeps what was loaded.
        let store = CertStore::load(vec![a.clone()]).unwrap();
        std::fs::write(&a.cert, "garbage").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert!(store.find("x1234567.apps.example.org").is_some());
    }
}
