//! Verifying RA-TLS certificates, and the `rustls` verifiers built on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use sha2::{Digest, Sha256};

use super::cert::parse_certificate;
use super::{report_data_for_spki, RaTlsError};
use crate::binding::purpose_of;
use crate::claims::Claims;
use crate::error::VerifyError;
use crate::policy::ClaimsPolicy;
use crate::snp::cert::unix_seconds;
use crate::verifier::Verifier;

/// How many verified certificates are remembered before the memory is emptied.
const CACHE_CAPACITY: usize = 4096;

#[derive(Debug)]
struct Verified {
    claims: Arc<Claims>,
    not_before: i64,
    not_after: i64,
}

/// Checks RA-TLS certificates: validity, evidence, binding, policy.
///
/// Verified certificates (keyed by the SHA-256 of their DER) are remembered until they expire: a repeated
/// handshake with the same certificate re-checks only the time and the policy (which may have been reloaded), and
/// [`RaTlsVerifier::peer_claims`] reads the claims of a connection's peer.
#[derive(Debug)]
pub struct RaTlsVerifier {
    verifier: Arc<Verifier>,
    policy: Arc<dyn ClaimsPolicy>,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

impl RaTlsVerifier {
    /// Verify evidence with `verifier` and accept claims that `policy` accepts.
    pub fn new(verifier: Arc<Verifier>, policy: Arc<dyn ClaimsPolicy>) -> Self {
        RaTlsVerifier {
            verifier,
            policy,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Verify a certificate at `now`; on success return the peer's claims.
    pub fn verify_certificate(
        &self,
        der: &[u8],
        now: SystemTime,
    ) -> Result<Arc<Claims>, RaTlsError> {
        let key: [u8; 32] = Sha256::digest(der).into();
        let n = unix_seconds(now);
        let cached = self.verified.lock().ok().and_then(|m| {
            m.get(&key)
                .map(|v| (v.claims.clone(), v.not_before, v.not_after))
        });
        let claims = match cached {
            Some((claims, nb, na)) if nb <= n && n <= na => claims,
            _ => {
                let parsed = parse_certificate(der)?;
                parsed.check_validity(now)?;
                let claims = self.verifier.verify_unbound(&parsed.evidence, now)?;
                check_binding(&claims.report_data, &parsed.spki_der)?;
                let claims = Arc::new(claims);
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= CACHE_CAPACITY {
                        m.retain(|_, v| v.not_after >= n);
                        if m.len() >= CACHE_CAPACITY {
                            m.clear();
                        }
                    }
                    m.insert(
                        key,
                        Verified {
                            claims: claims.clone(),
                            not_before: parsed.not_before,
                            not_after: parsed.not_after,
                        },
                    );
                }
                claims
            }
        };
        self.policy
            .check_claims(&claims)
            .map_err(crate::error::VerifyError::from)?;
        Ok(claims)
    }

    /// The claims of a certificate this verifier has accepted and not yet forgotten.
    pub fn claims_for(&self, der: &[u8]) -> Option<Arc<Claims>> {
        let key: [u8; 32] = Sha256::digest(der).into();
        self.verified
            .lock()
            .ok()?
            .get(&key)
            .map(|v| v.claims.clone())
    }

    /// The verified claims of a connection's peer (after its handshake completed with this verifier).
    pub fn peer_claims(&self, conn: &rustls::CommonState) -> Option<Arc<Claims>> {
        let cert = conn.peer_certificates()?.first()?;
        match self.claims_for(cert) {
            Some(c) => Some(c),
            // Forgotten (cache emptied): verify again, which is what accepted it in the first place.
            None => self.verify_certificate(cert, SystemTime::now()).ok(),
        }
    }

    fn check(
        &self,
        side: &'static str,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let result = if intermediates.is_empty() {
            self.verify_certificate(end_entity, now).map(|_| ())
        } else {
            Err(RaTlsError::Certificate(format!(
                "{} unexpected intermediate certificates",
                intermediates.len()
            )))
        };
        result.map_err(|e| {
            tracing::warn!(peer = side, check = e.check(), error = %e, "RA-TLS peer refused");
            // The detail stays with this side's log and the error value; the peer gets a bad_certificate alert.
            let ce = CertificateError::Other(OtherError(Arc::new(e)));
            rustls::Error::InvalidCertificate(ce)
        })
    }
}

/// Check that `report_data` binds `spki_der` as an RA-TLS key; when it binds the key for another purpose, say which.
fn check_binding(report_data: &[u8; 64], spki_der: &[u8]) -> Result<(), RaTlsError> {
    let expected = report_data_for_spki(spki_der);
    if expected.as_bytes() == report_data {
        return Ok(());
    }
    Err(match purpose_of(report_data, spki_der) {
        Some(found) => RaTlsError::WrongPurpose {
            expected: expected.purpose(),
            found,
        },
        None => VerifyError::ReportDataMismatch {
            expected: hex::encode(expected.as_bytes()),
            actual: hex::encode(report_data),
        }
        .into(),
    })
}

/// The handshake-signature methods shared by both verifier traits: RA-TLS checks signatures exactly as WebPKI
/// does, with the `algs` field of the implementing type. `@check NAME` writes the method NAME, which calls the
/// `rustls::crypto` function of the same name.
macro_rules! handshake_signatures {
    () => {
        handshake_signatures!(@check verify_tls12_signature);
        handshake_signatures!(@check verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
    (@check $name:ident) => {
        fn $name(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $name(message, cert, dss, &self.algs)
        }
    };
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// `rustls` server-certificate verifier for RA-TLS clients (the peer is a server).
///
/// The server name is not checked: an RA-TLS peer is identified by its evidence and the policy, not by a name.
#[derive(Debug)]
pub struct RaTlsServerCertVerifier {
    inner: Arc<RaTlsVerifier>,
    algs: WebPkiSupportedAlgorithms,
}

impl RaTlsServerCertVerifier {
    /// Wrap an RA-TLS verifier.
    pub fn new(inner: Arc<RaTlsVerifier>) -> Self {
        RaTlsServerCertVerifier {
            inner,
            algs: algorithms(),
        }
    }
}

impl ServerCertVerifier for RaTlsServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.check("server", end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// `rustls` client-certificate verifier for RA-TLS servers: a client certificate is mandatory.
#[derive(Debug)]
pub struct RaTlsClientCertVerifier {
    inner: Arc<RaTlsVerifier>,
    algs: WebPkiSupportedAlgorithms,
}

impl RaTlsClientCertVerifier {
    /// Wrap an RA-TLS verifier.
    pub fn new(inner: Arc<RaTlsVerifier>) -> Self {
        RaTlsClientCertVerifier {
            inner,
            algs: algorithms(),
        }
    }
}

impl ClientCertVerifier for RaTlsClientCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.check("client", end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}
