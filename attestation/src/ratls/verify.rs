//! Verifying RA-TLS certificates, and the `rustls` verifiers built on it.

use std::collections::HashMap;
use std::marker::PhantomData;
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
use super::{report_data_for_key, RaTlsError};
use crate::binding::purpose_of;
use crate::claims::Claims;
use crate::config_digest::ConfigDigest;
use crate::error::VerifyError;
use crate::policy::ClaimsPolicy;
use crate::snp::cert::unix_seconds;
use crate::verifier::{EvidenceWindow, Verifier};

/// How many verified certificates are remembered before the memory is emptied.
const CACHE_CAPACITY: usize = 4096;

/// The longest certificate lifetime (notAfter - notBefore) accepted when none is configured: 24 hours.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
struct Verified {
    claims: Arc<Claims>,
    /// The certificate's validity (seconds since the epoch, both ends included).
    not_before: i64,
    not_after: i64,
    /// When the chain and collateral the evidence was verified against are valid.
    evidence: EvidenceWindow,
}

impl Verified {
    /// Whether the remembered verdict still holds at `now`: the certificate and everything its evidence was
    /// verified against are within their validity.
    fn holds_at(&self, now: i64) -> bool {
        self.not_before <= now
            && now <= self.not_after
            && u64::try_from(now).is_ok_and(|n| self.evidence.contains(n))
    }

    /// When the verdict stops holding, seconds since the epoch.
    fn ends(&self) -> i64 {
        let evidence_end = i64::try_from(self.evidence.not_after).unwrap_or(i64::MAX);
        self.not_after.min(evidence_end.saturating_sub(1))
    }
}

/// Checks RA-TLS certificates: validity and lifetime, evidence, binding, policy.
///
/// Verified certificates (keyed by the SHA-256 of their DER) are remembered while the verdict holds: a repeated
/// handshake with the same certificate re-checks the certificate's validity, the validity of the chain and
/// collateral its evidence was verified against, and the policy (which may have been reloaded). Once either
/// validity has ended, the certificate is verified again from scratch, which refuses it and names what ended.
/// [`RaTlsVerifier::peer_claims`] reads the claims of a connection's peer.
#[derive(Debug)]
pub struct RaTlsVerifier {
    verifier: Arc<Verifier>,
    policy: Arc<dyn ClaimsPolicy>,
    max_lifetime: Duration,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

impl RaTlsVerifier {
    /// Verify evidence with `verifier` and accept claims that `policy` accepts, from certificates whose lifetime
    /// is at most [`DEFAULT_MAX_LIFETIME`].
    pub fn new(verifier: Arc<Verifier>, policy: Arc<dyn ClaimsPolicy>) -> Self {
        RaTlsVerifier {
            verifier,
            policy,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Refuse certificates whose lifetime (notAfter - notBefore) exceeds `max`: a leaked RA-TLS key is then
    /// useful for at most that long.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max;
        self
    }

    /// The longest certificate lifetime accepted.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// Verify a certificate at `now`; on success return the peer's claims.
    pub fn verify_certificate(
        &self,
        der: &[u8],
        now: SystemTime,
    ) -> Result<Arc<Claims>, RaTlsError> {
        self.verify_dated(der, now).map(|(claims, _)| claims)
    }

    /// As [`Self::verify_certificate`], also returning when the verdict stops holding (seconds since the epoch):
    /// the earlier of the certificate's notAfter and the end of the chain and collateral behind its evidence.
    pub fn verify_dated(
        &self,
        der: &[u8],
        now: SystemTime,
    ) -> Result<(Arc<Claims>, i64), RaTlsError> {
        let key: [u8; 32] = Sha256::digest(der).into();
        let n = unix_seconds(now);
        let cached = self.verified.lock().ok().and_then(|mut m| {
            match m.get(&key) {
                Some(v) if v.holds_at(n) => Some((v.claims.clone(), v.ends())),
                Some(_) => {
                    // Ended (or not yet begun): verify from scratch, which names what is out of date.
                    m.remove(&key);
                    None
                }
                None => None,
            }
        });
        let (claims, ends) = match cached {
            Some(hit) => hit,
            None => self.verify_fresh(key, der, now)?,
        };
        self.policy
            .check_claims(&claims)
            .map_err(crate::error::VerifyError::from)?;
        Ok((claims, ends))
    }

    /// Parse and verify a certificate without the memory, then remember the verdict.
    fn verify_fresh(
        &self,
        key: [u8; 32],
        der: &[u8],
        now: SystemTime,
    ) -> Result<(Arc<Claims>, i64), RaTlsError> {
        let n = unix_seconds(now);
        let parsed = parse_certificate(der)?;
        parsed.check_validity(now)?;
        let lifetime = parsed.not_after.saturating_sub(parsed.not_before);
        let max = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX);
        if lifetime > max {
            return Err(RaTlsError::LifetimeTooLong {
                lifetime_secs: lifetime,
                max_secs: self.max_lifetime.as_secs(),
            });
        }
        let verified = self.verifier.verify_dated(&parsed.evidence, now)?;
        check_binding(
            &verified.claims.report_data,
            &parsed.spki_der,
            parsed.config_digest.as_ref(),
        )?;
        let claims = Claims {
            config_digest: parsed.config_digest,
            ..verified.claims
        };
        let entry = Verified {
            claims: Arc::new(claims),
            not_before: parsed.not_before,
            not_after: parsed.not_after,
            evidence: verified.valid,
        };
        let result = (entry.claims.clone(), entry.ends());
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= CACHE_CAPACITY {
                m.retain(|_, v| v.holds_at(n));
                if m.len() >= CACHE_CAPACITY {
                    m.clear();
                }
            }
            m.insert(key, entry);
        }
        Ok(result)
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

/// Check that `report_data` binds `spki_der` as an RA-TLS key, with `config_digest` when the certificate carries
/// one; when it binds the key for another purpose, say which.
fn check_binding(
    report_data: &[u8; 64],
    spki_der: &[u8],
    config_digest: Option<&ConfigDigest>,
) -> Result<(), RaTlsError> {
    let expected = report_data_for_key(spki_der, config_digest);
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

/// A `rustls` verifier of RA-TLS peer certificates. `P` is the side the peer plays: [`ServerPeer`] for
/// [`RaTlsServerCertVerifier`], [`ClientPeer`] for [`RaTlsClientCertVerifier`].
#[derive(Debug)]
pub struct RaTlsCertVerifier<P> {
    inner: Arc<RaTlsVerifier>,
    algs: WebPkiSupportedAlgorithms,
    peer: PhantomData<P>,
}

impl<P> RaTlsCertVerifier<P> {
    /// Wrap an RA-TLS verifier.
    pub fn new(inner: Arc<RaTlsVerifier>) -> Self {
        RaTlsCertVerifier {
            inner,
            algs: algorithms(),
            peer: PhantomData,
        }
    }
}

/// The peer of a [`RaTlsServerCertVerifier`]: a TLS server.
#[derive(Debug)]
pub enum ServerPeer {}

/// The peer of a [`RaTlsClientCertVerifier`]: a TLS client.
#[derive(Debug)]
pub enum ClientPeer {}

/// `rustls` server-certificate verifier for RA-TLS clients (the peer is a server).
///
/// The server name is not checked: an RA-TLS peer is identified by its evidence and the policy, not by a name.
pub type RaTlsServerCertVerifier = RaTlsCertVerifier<ServerPeer>;

/// `rustls` client-certificate verifier for RA-TLS servers: a client certificate is mandatory.
pub type RaTlsClientCertVerifier = RaTlsCertVerifier<ClientPeer>;

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

#[cfg(test)]
mod tests;
