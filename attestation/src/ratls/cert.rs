//! Making and reading RA-TLS certificates.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{cmw, report_data_for_key, RaTlsError, CMW_OID, CMW_OID_STR};
use crate::attester::Attester;
use crate::config_digest::ConfigDigest;
use crate::evidence::Evidence;
use crate::snp::cert::{rfc3339, unix_seconds};

/// How RA-TLS certificates are issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOptions {
    /// How long a certificate is valid from its issue time (default 1 hour).
    pub validity: Duration,
    /// How far before the issue time the validity starts, to tolerate peers whose clocks lag (default 5 minutes).
    pub backdate: Duration,
    /// Subject common name (default `tee-gateway RA-TLS`).
    pub common_name: String,
    /// DNS names for the subjectAltName extension (default none; RA-TLS peers identify by evidence, not name).
    pub dns_names: Vec<String>,
    /// Issue the certificate as of this time instead of now (for tests and tools).
    pub issued_at: Option<SystemTime>,
    /// The digest of the owner's security-relevant configuration to bind with the key (default none; the gateway
    /// binds its own, see [`crate::config_digest`]).
    pub config_digest: Option<ConfigDigest>,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            validity: Duration::from_secs(3600),
            backdate: Duration::from_secs(300),
            common_name: "tee-gateway RA-TLS".into(),
            dns_names: Vec::new(),
            issued_at: None,
            config_digest: None,
        }
    }
}

/// A certificate with evidence bound to its key, and that key.
#[derive(Debug)]
pub struct RaTlsCertificate {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    not_after: SystemTime,
    evidence: Evidence,
}

impl Clone for RaTlsCertificate {
    fn clone(&self) -> Self {
        RaTlsCertificate {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            not_after: self.not_after,
            evidence: self.evidence.clone(),
        }
    }
}

impl RaTlsCertificate {
    /// Generate a fresh P-256 key, attest to it and self-sign a certificate carrying the evidence.
    pub fn generate(attester: &dyn Attester, options: &CertOptions) -> Result<Self, RaTlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| RaTlsError::Build(e.to_string()))?;
        let report_data = report_data_for_key(
            &rcgen::PublicKeyData::subject_public_key_info(&key),
            options.config_digest.as_ref(),
        );
        let evidence = attester.attest(&report_data)?;
        Self::build(key, evidence, options)
    }

    /// Self-sign a certificate for `key` carrying `evidence` as given (no binding is checked here).
    pub(crate) fn build(
        key: KeyPair,
        evidence: Evidence,
        options: &CertOptions,
    ) -> Result<Self, RaTlsError> {
        let issued = options.issued_at.unwrap_or_else(SystemTime::now);
        let not_before = issued.checked_sub(options.backdate).unwrap_or(issued);
        let not_after = issued + options.validity;
        let to_odt = |t: SystemTime| {
            time::OffsetDateTime::from_unix_timestamp(unix_seconds(t))
                .map_err(|e| RaTlsError::Build(e.to_string()))
        };
        let mut params = CertificateParams::new(options.dns_names.clone())
            .map_err(|e| RaTlsError::Build(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, options.common_name.clone());
        params.distinguished_name = dn;
        params.not_before = to_odt(not_before)?;
        params.not_after = to_odt(not_after)?;
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let mut ext = CustomExtension::from_oid_content(
            CMW_OID,
            cmw::encode_extension(
                evidence.media_type(),
                &evidence.encode(),
                options.config_digest.as_ref(),
            )?,
        );
        ext.set_criticality(false);
        params.custom_extensions.push(ext);
        let cert = params
            .self_signed(&key)
            .map_err(|e| RaTlsError::Build(e.to_string()))?;
        Ok(RaTlsCertificate {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after: std::time::UNIX_EPOCH
                + Duration::from_secs(unix_seconds(not_after).max(0) as u64),
            evidence,
        })
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The private key (PKCS#8 DER). It exists only in this process's memory.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The end of the certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The evidence the certificate carries.
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.cert.to_vec()))
    }

    /// A `rustls` certified key for this certificate.
    pub fn certified_key(&self) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, RaTlsError> {
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&self.key_der())
            .map_err(|e| RaTlsError::Build(format!("loading the key: {e}")))?;
        Ok(std::sync::Arc::new(rustls::sign::CertifiedKey::new(
            vec![self.cert.clone()],
            signer,
        )))
    }
}

/// What an RA-TLS certificate contains.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    /// The evidence from the CMW extension.
    pub evidence: Evidence,
    /// DER of the certificate's SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The configuration digest the extension carries, if any (bound with the key only once verified).
    pub config_digest: Option<ConfigDigest>,
    /// Validity start, seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity end, seconds since the Unix epoch.
    pub not_after: i64,
}

impl ParsedCertificate {
    /// Check that `now` lies within the validity period.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), RaTlsError> {
        let n = unix_seconds(now);
        if n < self.not_before || n > self.not_after {
            return Err(RaTlsError::Validity {
                not_before: rfc3339(self.not_before),
                not_after: rfc3339(self.not_after),
                now: rfc3339(n),
            });
        }
        Ok(())
    }
}

/// Read the evidence, key and validity of an RA-TLS certificate (nothing is verified here).
pub fn parse_certificate(der: &[u8]) -> Result<ParsedCertificate, RaTlsError> {
    let (rest, x) =
        X509Certificate::from_der(der).map_err(|e| RaTlsError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RaTlsError::Certificate(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    let mut found = None;
    for ext in x.extensions() {
        if ext.oid.to_id_string() == CMW_OID_STR {
            if found.is_some() {
                return Err(RaTlsError::Cmw("more than one evidence extension".into()));
            }
            found = Some(ext.value);
        }
    }
    let value = found.ok_or(RaTlsError::NoEvidence)?;
    let content = cmw::decode_extension(value)?;
    let evidence = Evidence::decode(&content.media_type, &content.evidence)
        .map_err(|e| RaTlsError::Cmw(e.to_string()))?;
    Ok(ParsedCertificate {
        evidence,
        spki_der: x.tbs_certificate.subject_pki.raw.to_vec(),
        config_digest: content.config_digest,
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
    })
}
