//! Report data: what a piece of evidence vouches for, and for which use.
//!
//! TDX and SEV-SNP evidence carries 64 bytes chosen by the guest (`REPORTDATA`, `REPORT_DATA`). tee-gateway
//! never attests bytes a caller picked: every use of evidence is a [`Purpose`] with its own label, and the report
//! data is always
//!
//! ```text
//! SHA-512( label(purpose) || payload )
//! ```
//!
//! built by [`ReportData::new`], the only way to make a [`ReportData`]. [`crate::Attester::attest`] takes a
//! [`ReportData`], not raw bytes, so evidence made for one use (say, the gateway's public TLS key, which the
//! operator may hold) can never be presented as evidence for another (an RA-TLS certificate key, which must be
//! born in the TEE). The labels are versioned and prefix-free among themselves (each ends with the only `:` it
//! contains), so no payload under one label can collide with a payload under another. `docs/ra-tls.md` lists
//! them.

use std::fmt;

use sha2::{Digest, Sha512};

/// Where a public TLS key attested by the gateway came from.
///
/// An operator-supplied key is one the operator also holds: whoever holds it can decrypt the TLS sessions made
/// with it. The origin is part of the label, so a document cannot claim another origin than the evidence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrigin {
    /// Loaded from files the operator provides: the operator knows the private key.
    OperatorSupplied,
    /// Generated inside the gateway's TEE and never exported (keys obtained through ACME inside the TEE).
    GeneratedInTee,
}

impl KeyOrigin {
    /// The origin's name, as in the attestation document and the label: `operator-supplied`, `generated-in-tee`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrigin::OperatorSupplied => "operator-supplied",
            KeyOrigin::GeneratedInTee => "generated-in-tee",
        }
    }
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A use of evidence. Each has its own report-data label; see [`Purpose::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// The key of an RA-TLS certificate, generated in the TEE; payload: its DER SubjectPublicKeyInfo.
    RaTlsKey,
    /// The key of an RA-TLS certificate together with the digest of its owner's security-relevant configuration
    /// ([`crate::config_digest`]); payload: the 32 digest bytes, then the key's DER SubjectPublicKeyInfo.
    RaTlsKeyConfigured,
    /// The gateway's client-facing TLS key, served at `gateway.<base>/v1/attestation`; payload: its DER
    /// SubjectPublicKeyInfo. The origin of the key is part of the purpose.
    PublicTlsKey(KeyOrigin),
    /// The gateway's public history of the certificates it obtained; payload: the manifest's digest.
    CertificateManifest,
    /// Sealed data; payload: the sealed object's context.
    Sealing,
}

impl Purpose {
    /// Every purpose, for diagnostics and tests.
    pub const ALL: [Purpose; 6] = [
        Purpose::RaTlsKey,
        Purpose::RaTlsKeyConfigured,
        Purpose::PublicTlsKey(KeyOrigin::OperatorSupplied),
        Purpose::PublicTlsKey(KeyOrigin::GeneratedInTee),
        Purpose::CertificateManifest,
        Purpose::Sealing,
    ];

    /// The ASCII label hashed in front of the payload.
    pub fn label(self) -> &'static str {
        match self {
            Purpose::RaTlsKey => "tee-gateway/v1/ra-tls-key:",
            Purpose::RaTlsKeyConfigured => "tee-gateway/v1/ra-tls-key/configured:",
            Purpose::PublicTlsKey(KeyOrigin::OperatorSupplied) => {
                "tee-gateway/v1/public-tls-key/operator-supplied:"
            }
            Purpose::PublicTlsKey(KeyOrigin::GeneratedInTee) => {
                "tee-gateway/v1/public-tls-key/generated-in-tee:"
            }
            Purpose::CertificateManifest => "tee-gateway/v1/certificate-manifest:",
            Purpose::Sealing => "tee-gateway/v1/sealing:",
        }
    }

    /// A short name for messages: the label without its prefix and colon (`ra-tls-key`,
    /// `public-tls-key/operator-supplied`, ...).
    pub fn name(self) -> &'static str {
        let label = self.label();
        let name = label.strip_prefix("tee-gateway/v1/").unwrap_or(label);
        name.strip_suffix(':').unwrap_or(name)
    }

    /// A statement of how this purpose's report data is computed from the payload described by `payload`, e.g.
    /// `report_data = SHA-512("tee-gateway/v1/ra-tls-key:" || SubjectPublicKeyInfo DER)`.
    pub fn describe(self, payload: &str) -> String {
        format!("report_data = SHA-512({:?} || {payload})", self.label())
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 64 bytes of report data for one purpose and payload: SHA-512(label || payload).
///
/// There is no way to make one from raw bytes, so whatever produces evidence says what it is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReportData {
    purpose: Purpose,
    bytes: [u8; 64],
}

impl ReportData {
    /// The report data binding `payload` for `purpose`.
    pub fn new(purpose: Purpose, payload: &[u8]) -> Self {
        let mut h = Sha512::new();
        h.update(purpose.label().as_bytes());
        h.update(payload);
        ReportData {
            purpose,
            bytes: h.finalize().into(),
        }
    }

    /// The purpose this report data was made for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The 64 bytes, as the evidence carries them.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.bytes
    }
}

#[cfg(test)]
impl ReportData {
    /// Report data with exactly these bytes, for this crate's unit tests of the backends, which need to know them.
    /// It exists only in test builds.
    pub(crate) fn test_bytes(bytes: [u8; 64]) -> Self {
        ReportData {
            purpose: Purpose::RaTlsKey,
            bytes,
        }
    }
}

impl fmt::Debug for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportData")
            .field("purpose", &self.purpose)
            .field("bytes", &hex::encode(self.bytes))
            .finish()
    }
}

/// The purpose under which `report_data` binds `payload`, if any: used to name what a piece of evidence was
/// really made for when it is presented for another use.
pub fn purpose_of(report_data: &[u8; 64], payload: &[u8]) -> Option<Purpose> {
    Purpose::ALL
        .into_iter()
        .find(|p| ReportData::new(*p, payload).as_bytes() == report_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_versioned_and_prefix_free() {
        for (i, a) in Purpose::ALL.iter().enumerate() {
            assert!(a.label().starts_with("tee-gateway/v1/"), "{a:?}");
            assert!(a.label().is_ascii(), "{a:?}");
            for b in &Purpose::ALL[i + 1..] {
                assert!(
                    !a.label().starts_with(b.label()) && !b.label().starts_with(a.label()),
                    "{a:?} and {b:?} have labels where one is a prefix of the other"
                );
            }
        }
        // The retired label shared by RA-TLS keys and the public TLS key is no purpose's label.
        assert!(Purpose::ALL
            .iter()
            .all(|p| !p.label().starts_with("tee-gateway/ra-tls/")));
    }

    #[test]
    fn each_purpose_gives_different_report_data_for_the_same_payload() {
        let payload = b"the same SubjectPublicKeyInfo";
        for (i, a) in Purpose::ALL.iter().enumerate() {
            for b in &Purpose::ALL[i + 1..] {
                assert_ne!(
                    ReportData::new(*a, payload).as_bytes(),
                    ReportData::new(*b, payload).as_bytes(),
                    "{a} and {b}"
                );
            }
            assert_eq!(
                purpose_of(ReportData::new(*a, payload).as_bytes(), payload),
                Some(*a)
            );
        }
        assert_eq!(purpose_of(&[0; 64], payload), None);
    }

    #[test]
    fn report_data_is_sha512_of_label_and_payload() {
        let rd = ReportData::new(Purpose::RaTlsKey, b"key");
        let want: [u8; 64] = Sha512::digest(b"tee-gateway/v1/ra-tls-key:key").into();
        assert_eq!(rd.as_bytes(), &want);
        assert_eq!(rd.purpose(), Purpose::RaTlsKey);
        assert_ne!(rd, ReportData::new(Purpose::RaTlsKey, b"kez"));
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(Purpose::RaTlsKey.name(), "ra-tls-key");
        assert_eq!(
            Purpose::PublicTlsKey(KeyOrigin::OperatorSupplied).to_string(),
            "public-tls-key/operator-supplied"
        );
        assert_eq!(
            Purpose::RaTlsKey.describe("SubjectPublicKeyInfo DER"),
            "report_data = SHA-512(\"tee-gateway/v1/ra-tls-key:\" || SubjectPublicKeyInfo DER)"
        );
        assert_eq!(
            serde_json::to_string(&KeyOrigin::GeneratedInTee)
                .ok()
                .as_deref(),
            Some("\"generated-in-tee\"")
        );
    }
}
