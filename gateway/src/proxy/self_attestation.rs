//! The reserved name `gateway.<base-domain>`: the gateway's own attestation, bound to its public TLS key.
//!
//! A client connecting to `gateway.<base-domain>` gets the gateway's TLS certificate for that name (the
//! TLS session is terminated here, never relayed), and `GET /v1/attestation` answers a JSON document with
//! evidence whose `report_data` binds the DER SubjectPublicKeyInfo of that very certificate for
//! [`Purpose::PublicTlsKey`]: SHA-512 of the label `tee-gateway/v1/public-tls-key/<origin>:` followed by the key,
//! where `<origin>` says where the key came from ([`KeyOrigin`], also the document's `key_origin`). A client that
//! verifies the evidence and compares the binding with the key of the TLS session it is on knows it talks to the
//! attested gateway — and, from the origin, whether the operator also holds that key (an operator-supplied key
//! lets the operator decrypt the TLS sessions made with it, so terminated routes are private only from everyone
//! else).
//!
//! The label is not the RA-TLS label: this key may be the operator's, so evidence over it must never pass for an
//! RA-TLS certificate's evidence (see `attestation::binding` and `docs/ra-tls.md`).
//!
//! Evidence is produced once per certificate key and cached; a certificate reload with a new key produces
//! new evidence on the next request.
//!
//! The document also publishes the gateway's configuration digest ([`Configuration`]): the digest, the document it
//! hashes, and the control listener's current RA-TLS certificate, whose evidence binds that digest with its key
//! ([`Purpose::RaTlsKeyConfigured`]). A client checks the digest with `gateway attestation verify --format
//! ra-tls-cert` on that certificate, and the document by hashing it; agents pin the digest.

use std::sync::{Arc, Mutex};

use attestation::binding::{KeyOrigin, Purpose, ReportData};
use attestation::ratls::RaTlsIdentity;
use attestation::{Attester, ConfigDigest};

/// The path that serves the document.
pub const PATH: &str = "/v1/attestation";

/// The report data binding the public TLS key `spki_der`, which came from `origin`.
pub fn report_data_for(origin: KeyOrigin, spki_der: &[u8]) -> ReportData {
    ReportData::new(Purpose::PublicTlsKey(origin), spki_der)
}

/// Why no attestation document could be produced.
#[derive(Debug, thiserror::Error)]
pub enum SelfAttestationError {
    /// The certificate could not be parsed.
    #[error("gateway certificate cannot be parsed: {0}")]
    Certificate(String),
    /// The attester failed.
    #[error("attestation failed: {0}")]
    Attest(#[from] attestation::AttestError),
    /// The task producing the evidence panicked.
    #[error("attestation task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// The JSON document served at [`PATH`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AttestationDocument {
    /// The platform the evidence comes from.
    pub platform: String,
    /// The evidence media type (see `docs/ra-tls.md`).
    pub media_type: String,
    /// The evidence bytes, base64 (standard alphabet, padded).
    pub evidence: String,
    /// How `report_data` was computed, naming the label.
    pub binding: String,
    /// Where the TLS key came from: `operator-supplied` (the operator holds the private key and can decrypt
    /// sessions made with it) or `generated-in-tee`. The label of the binding repeats it, so it is attested.
    pub key_origin: KeyOrigin,
    /// The DER SubjectPublicKeyInfo bound, hex.
    pub public_key: String,
    /// The leaf certificate presented on this name, PEM.
    pub certificate: String,
    /// The digest of the gateway's security-relevant configuration, which its RA-TLS identity binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<ConfigDigest>,
    /// The configuration document the digest is the SHA-256 of (of its compact JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<serde_json::Value>,
    /// The control listener's current RA-TLS certificate, PEM: its evidence binds `config_digest` with its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_certificate: Option<String>,
}

/// The gateway's configuration digest, as the document publishes it.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// The digest.
    pub digest: ConfigDigest,
    /// The document it hashes.
    pub document: serde_json::Value,
    /// The control listener's RA-TLS identity, whose certificate binds the digest.
    pub identity: Arc<RaTlsIdentity>,
}

/// The key last attested (its origin and DER SubjectPublicKeyInfo) and its document.
type CachedDocument = Option<((KeyOrigin, Vec<u8>), AttestationDocument)>;

/// Produces and caches the gateway's attestation document.
pub struct SelfAttestation {
    attester: Arc<dyn Attester>,
    configuration: Option<Configuration>,
    cache: Mutex<CachedDocument>,
}

impl std::fmt::Debug for SelfAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfAttestation")
            .field("platform", &self.attester.platform())
            .finish_non_exhaustive()
    }
}

impl SelfAttestation {
    /// Attests with `attester`.
    pub fn new(attester: Arc<dyn Attester>) -> Self {
        SelfAttestation {
            attester,
            configuration: None,
            cache: Mutex::new(None),
        }
    }

    /// Publishes `configuration` in the document too.
    pub fn with_configuration(mut self, configuration: Configuration) -> Self {
        self.configuration = Some(configuration);
        self
    }

    /// The JSON document for the certificate `leaf_der`, whose key came from `origin`, from the cache when its
    /// key did not change.
    pub fn document(
        &self,
        leaf_der: &[u8],
        origin: KeyOrigin,
    ) -> Result<Arc<Vec<u8>>, SelfAttestationError> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf_der)
            .map_err(|e| SelfAttestationError::Certificate(e.to_string()))?;
        let key = (origin, cert.tbs_certificate.subject_pki.raw.to_vec());
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(cached, _)| *cached == key)
            .map(|(_, doc)| doc.clone());
        let mut doc = match cached {
            Some(doc) => doc,
            None => {
                let (origin, spki) = &key;
                let report_data = report_data_for(*origin, spki);
                let evidence = self.attester.attest(&report_data)?;
                let doc = AttestationDocument {
                    platform: format!("{:?}", self.attester.platform()),
                    media_type: evidence.media_type().to_owned(),
                    evidence: base64_encode(&evidence.encode()),
                    binding: report_data.purpose().describe("SubjectPublicKeyInfo DER"),
                    key_origin: *origin,
                    public_key: hex::encode(spki),
                    certificate: pem_encode(leaf_der),
                    config_digest: None,
                    configuration: None,
                    control_certificate: None,
                };
                *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, doc.clone()));
                doc
            }
        };
        // The control certificate renews on its own schedule: always the current one.
        if let Some(c) = &self.configuration {
            doc.config_digest = Some(c.digest);
            doc.configuration = Some(c.document.clone());
            doc.control_certificate = Some(c.identity.certificate().cert_pem());
        }
        Ok(Arc::new(
            serde_json::to_vec_pretty(&doc).unwrap_or_default(),
        ))
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Answers one HTTP/1.1 request on a terminated `gateway.<base>` connection and closes it.
pub(crate) async fn serve_one<S>(
    stream: &mut S,
    document: Result<Arc<Vec<u8>>, SelfAttestationError>,
    deadline: std::time::Duration,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(deadline, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let request_line =
        String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default()).to_string();
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body): (&str, &str, Vec<u8>) = match (read, method, path) {
        (Err(_), _, _) => (
            "408 Request Timeout",
            "text/plain",
            b"request timeout\n".to_vec(),
        ),
        (Ok(Err(e)), _, _) => return Err(e),
        (Ok(Ok(())), "GET", p) if p == PATH || p == "/" => match &document {
            Ok(doc) => ("200 OK", "application/json", doc.as_ref().clone()),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain",
                format!("attestation unavailable: {e}\n").into_bytes(),
            ),
        },
        (Ok(Ok(())), "GET", _) => (
            "404 Not Found",
            "text/plain",
            format!("only GET {PATH}\n").into_bytes(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            format!("only GET {PATH}\n").into_bytes(),
        ),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_publishes_the_digest_its_document_and_the_certificate_that_binds_it() {
        let pki = test_support::pki::sim_snp();
        let attester: Arc<dyn Attester> = Arc::new(attestation::SimSnpAttester::new(
            pki.clone(),
            [0x61; 48],
            [0; 32],
        ));
        let document = serde_json::json!({"version": 1, "simulated_roots": ["ab"]});
        let digest = ConfigDigest::of(&document).unwrap();
        let options = attestation::ratls::CertOptions {
            config_digest: Some(digest),
            ..Default::default()
        };
        let identity = Arc::new(RaTlsIdentity::new(attester.clone(), options).unwrap());
        let published = SelfAttestation::new(attester).with_configuration(Configuration {
            digest,
            document: document.clone(),
            identity: identity.clone(),
        });
        let leaf = rcgen::generate_simple_self_signed(vec!["gateway.apps.example".into()]).unwrap();
        let json = published
            .document(leaf.cert.der(), KeyOrigin::OperatorSupplied)
            .unwrap();
        let doc: AttestationDocument = serde_json::from_slice(&json).unwrap();
        assert_eq!(doc.config_digest, Some(digest));
        let configuration = doc.configuration.unwrap();
        assert_eq!(
            ConfigDigest::of(&configuration).unwrap(),
            digest,
            "the digest is the document's"
        );
        // The control certificate verifies, and its evidence binds the published digest.
        let pem = pem::parse(doc.control_certificate.unwrap()).unwrap();
        let anchors = attestation::TrustAnchors::production()
            .with_sim_snp_ark(pki.ark_der())
            .unwrap();
        let verifier = attestation::ratls::RaTlsVerifier::new(
            Arc::new(attestation::Verifier::new(anchors)),
            Arc::new(attestation::policy::PolicyFn(|_: &attestation::Claims| {
                Ok(())
            })),
        );
        let claims = verifier
            .verify_certificate(pem.contents(), std::time::SystemTime::now())
            .unwrap();
        assert_eq!(claims.config_digest, Some(digest));
        // After a renewal the document carries the new certificate.
        identity.renew().unwrap();
        let again: AttestationDocument = serde_json::from_slice(
            &published
                .document(leaf.cert.der(), KeyOrigin::OperatorSupplied)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            again.control_certificate,
            Some(identity.certificate().cert_pem())
        );
        assert_ne!(again.control_certificate, Some(pem::encode(&pem)));
    }

    #[test]
    fn binding_is_the_public_tls_key_purpose_with_its_origin() {
        let rd = report_data_for(KeyOrigin::OperatorSupplied, b"key");
        assert_eq!(
            rd.purpose(),
            Purpose::PublicTlsKey(KeyOrigin::OperatorSupplied)
        );
        assert_eq!(
            rd,
            ReportData::new(Purpose::PublicTlsKey(KeyOrigin::OperatorSupplied), b"key")
        );
        assert_ne!(rd, report_data_for(KeyOrigin::GeneratedInTee, b"key"));
        assert_ne!(rd, report_data_for(KeyOrigin::OperatorSupplied, b"kez"));
        assert_ne!(
            rd.as_bytes(),
            attestation::ratls::report_data_for_spki(b"key").as_bytes(),
            "the public TLS key must not be bound like an RA-TLS key"
        );
    }
}
