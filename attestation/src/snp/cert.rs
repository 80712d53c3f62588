//! Certificates of the AMD key hierarchy (ARK, ASK/ASVK, VCEK/VLEK) as the SNP verifier needs them.

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{FromDer, X509Certificate};

use super::claims::SnpTcb;
use crate::error::VerifyError;

/// OID arc of AMD's VCEK/VLEK extensions (1.3.6.1.4.1.3704.1).
mod oid {
    pub(super) const PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
    pub(super) const BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
    pub(super) const TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
    pub(super) const SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
    pub(super) const UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
    pub(super) const FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
    pub(super) const HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
}

/// A parsed certificate: its DER, the names and validity needed for chain building, and `sev`'s view of it for
/// the RSA-PSS signature checks.
#[derive(Debug, Clone)]
pub(crate) struct AmdCert {
    /// The certificate's role, for messages ("ARK", "ASK", "VCEK", ...).
    pub role: &'static str,
    /// DER encoding.
    pub der: Vec<u8>,
    /// DER of the subject name.
    pub subject: Vec<u8>,
    /// DER of the issuer name.
    pub issuer: Vec<u8>,
    /// The subject name as text.
    pub subject_text: String,
    /// Validity start, seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity end, seconds since the Unix epoch.
    pub not_after: i64,
    /// `sev`'s certificate, used for signature verification.
    pub sev: sev::certs::snp::Certificate,
}

impl AmdCert {
    /// Parse DER (a trailing byte is an error).
    pub(crate) fn from_der(role: &'static str, der: &[u8]) -> Result<Self, VerifyError> {
        let malformed = |reason: String| VerifyError::Malformed {
            part: cert_part(role),
            reason,
        };
        let (rest, x) = X509Certificate::from_der(der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        // The outer signature algorithm is not covered by the signature: insist that it repeats the signed one,
        // and that the signature BIT STRING has no unused bits, so that no bit of the certificate is malleable.
        let xc = <x509_cert::Certificate as x509_cert::der::Decode>::from_der(der)
            .map_err(|e| malformed(e.to_string()))?;
        if xc.signature_algorithm != xc.tbs_certificate.signature {
            return Err(malformed(
                "the outer signature algorithm differs from the signed one".into(),
            ));
        }
        if xc.signature.unused_bits() != 0 {
            return Err(malformed("the signature has unused bits".into()));
        }
        let sev =
            sev::certs::snp::Certificate::from_der(der).map_err(|e| malformed(e.to_string()))?;
        Ok(AmdCert {
            role,
            der: der.to_vec(),
            subject: x.subject().as_raw().to_vec(),
            issuer: x.issuer().as_raw().to_vec(),
            subject_text: x.subject().to_string(),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            sev,
        })
    }

    /// Parse PEM or DER.
    pub(crate) fn from_pem_or_der(role: &'static str, bytes: &[u8]) -> Result<Self, VerifyError> {
        match pem::parse(bytes) {
            Ok(p) => Self::from_der(role, p.contents()),
            Err(_) => Self::from_der(role, bytes),
        }
    }

    /// Whether the subject or issuer name marks a certificate of a simulated AMD PKI.
    pub(crate) fn looks_simulated(&self) -> bool {
        let marker = crate::snp::sim::SIM_ORGANIZATION.as_bytes();
        [&self.subject, &self.issuer]
            .iter()
            .any(|n| n.windows(marker.len()).any(|w| w == marker))
    }

    /// Check that `self` signed `child` (RSA-PSS with SHA-384, as AMD signs its certificates).
    pub(crate) fn check_signed(&self, child: &AmdCert) -> Result<(), VerifyError> {
        use sev::certs::snp::Verifiable;
        (&self.sev, &child.sev)
            .verify()
            .map_err(|e| VerifyError::CertificateSignature {
                cert: child.role,
                issuer: self.role,
                reason: e.to_string(),
            })
    }
}

fn cert_part(role: &'static str) -> &'static str {
    match role {
        "ARK" => "ARK certificate",
        "ASK" => "ASK certificate",
        "ASVK" => "ASVK certificate",
        "VCEK" => "VCEK certificate",
        "VLEK" => "VLEK certificate",
        _ => "certificate",
    }
}

/// Check a validity window against `now`, naming `role` in the error.
pub(crate) fn check_validity(
    role: &'static str,
    not_before: i64,
    not_after: i64,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let now_s = unix_seconds(now);
    if now_s < not_before || now_s > not_after {
        return Err(VerifyError::CertificateValidity {
            cert: role,
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            now: rfc3339(now_s),
        });
    }
    Ok(())
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Format Unix seconds as RFC 3339.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// The values a VCEK or VLEK certificate endorses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endorsement {
    /// productName, e.g. "Milan-B0".
    pub product_name: Option<String>,
    /// The TCB the key was derived for.
    pub tcb: SnpTcb,
    /// hwID: the CHIP_ID (VCEK only).
    pub hw_id: Option<Vec<u8>>,
}

/// Read the AMD extensions of a VCEK or VLEK certificate.
pub(crate) fn endorsement(cert: &AmdCert) -> Result<Endorsement, VerifyError> {
    let malformed = |reason: String| VerifyError::Malformed {
        part: cert_part(cert.role),
        reason,
    };
    let (_, x) = X509Certificate::from_der(&cert.der).map_err(|e| malformed(e.to_string()))?;
    let mut product_name = None;
    let mut hw_id = None;
    let (mut bl, mut tee, mut snp, mut ucode, mut fmc) = (None, None, None, None, None);
    for ext in x.extensions() {
        let id = ext.oid.to_id_string();
        let spl = |v: &[u8]| -> Result<u8, VerifyError> {
            // DER INTEGER 0..=255: 02 01 xx or 02 02 00 xx.
            match v {
                [0x02, 0x01, b] if *b < 0x80 => Ok(*b),
                [0x02, 0x02, 0x00, b] if *b >= 0x80 => Ok(*b),
                _ => Err(malformed(format!("extension {id} is not a small INTEGER"))),
            }
        };
        match id.as_str() {
            oid::PRODUCT_NAME => {
                // IA5String (tag 0x16) with a short length.
                let v = ext.value;
                if v.len() >= 2 && v[0] == 0x16 && v[1] as usize == v.len() - 2 {
                    product_name = Some(String::from_utf8_lossy(&v[2..]).into_owned());
                } else {
                    return Err(malformed("productName is not an IA5String".into()));
                }
            }
            oid::BL_SPL => bl = Some(spl(ext.value)?),
            oid::TEE_SPL => tee = Some(spl(ext.value)?),
            oid::SNP_SPL => snp = Some(spl(ext.value)?),
            oid::UCODE_SPL => ucode = Some(spl(ext.value)?),
            oid::FMC_SPL => fmc = Some(spl(ext.value)?),
            oid::HW_ID => hw_id = Some(ext.value.to_vec()),
            _ => {}
        }
    }
    let need =
        |v: Option<u8>, name: &str| v.ok_or_else(|| malformed(format!("missing {name} extension")));
    Ok(Endorsement {
        product_name,
        tcb: SnpTcb {
            bootloader: need(bl, "blSPL")?,
            tee: need(tee, "teeSPL")?,
            snp: need(snp, "snpSPL")?,
            microcode: need(ucode, "ucodeSPL")?,
            fmc,
        },
        hw_id,
    })
}
