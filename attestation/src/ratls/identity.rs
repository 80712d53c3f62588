//! One's own RA-TLS certificate, served to `rustls` and renewed before it expires.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::{CertOptions, RaTlsCertificate, RaTlsError};
use crate::attester::Attester;

#[derive(Debug)]
struct Current {
    cert: RaTlsCertificate,
    key: Arc<CertifiedKey>,
}

/// Holds the current RA-TLS certificate of this TEE and replaces it before expiry.
///
/// It resolves the certificate for both `rustls` servers and clients. The owner calls
/// [`RaTlsIdentity::renew_if_due`] periodically (for instance every minute, or at [`RaTlsIdentity::renew_at`]);
/// renewal attests a fresh key, so handshakes never wait for attestation.
pub struct RaTlsIdentity {
    attester: Arc<dyn Attester>,
    options: CertOptions,
    current: RwLock<Arc<Current>>,
}

impl std::fmt::Debug for RaTlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaTlsIdentity")
            .field("options", &self.options)
            .finish()
    }
}

impl RaTlsIdentity {
    /// Issue the first certificate.
    pub fn new(attester: Arc<dyn Attester>, options: CertOptions) -> Result<Self, RaTlsError> {
        let current = Self::issue(attester.as_ref(), &options)?;
        Ok(RaTlsIdentity {
            attester,
            options,
            current: RwLock::new(Arc::new(current)),
        })
    }

    fn issue(attester: &dyn Attester, options: &CertOptions) -> Result<Current, RaTlsError> {
        let cert = RaTlsCertificate::generate(attester, options)?;
        let key = cert.certified_key()?;
        tracing::info!(platform = %attester.platform(), not_after = ?cert.not_after(), "issued RA-TLS certificate");
        Ok(Current { cert, key })
    }

    fn current(&self) -> Arc<Current> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The certificate in use.
    pub fn certificate(&self) -> RaTlsCertificate {
        self.current().cert.clone()
    }

    /// When the certificate should be replaced: when a quarter of its validity remains.
    pub fn renew_at(&self) -> SystemTime {
        let not_after = self.current().cert.not_after();
        not_after
            .checked_sub(self.options.validity / 4)
            .unwrap_or(not_after)
    }

    /// Replace the certificate now.
    pub fn renew(&self) -> Result<(), RaTlsError> {
        let fresh = Arc::new(Self::issue(
            self.attester.as_ref(),
            &CertOptions {
                issued_at: None,
                ..self.options.clone()
            },
        )?);
        match self.current.write() {
            Ok(mut g) => *g = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        Ok(())
    }

    /// Replace the certificate if `now` is past [`RaTlsIdentity::renew_at`]; returns whether it did.
    pub fn renew_if_due(&self, now: SystemTime) -> Result<bool, RaTlsError> {
        if now < self.renew_at() {
            return Ok(false);
        }
        self.renew()?;
        Ok(true)
    }

    /// How long until renewal is due (zero if overdue).
    pub fn time_to_renewal(&self, now: SystemTime) -> Duration {
        self.renew_at()
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

impl ResolvesServerCert for RaTlsIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

impl ResolvesClientCert for RaTlsIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let key = self.current().key.clone();
        key.key.choose_scheme(sigschemes).is_some().then_some(key)
    }

    fn has_certs(&self) -> bool {
        true
    }
}
