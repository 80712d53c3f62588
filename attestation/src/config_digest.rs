//! The digest of a program's security-relevant configuration, bound into its RA-TLS identity.
//!
//! Evidence covers the code a TEE booted, not the files it reads afterwards. The gateway's trust anchors, whether it
//! trusts simulated roots, its listeners and where its TLS keys come from are read from a configuration the host
//! may be able to write. The gateway therefore describes those settings in a document, hashes it to a
//! [`ConfigDigest`] (SHA-256 of the document's JSON), and binds the digest together with its RA-TLS key in the
//! report data ([`crate::Purpose::RaTlsKeyConfigured`]). A peer learns the digest from the certificate, the
//! verifier checks the binding and puts the digest in the [`crate::Claims`], and a policy can pin it
//! ([`crate::policy::GatewayPolicy::config_digest`]): a configuration changed behind the gateway's back changes the
//! digest, and agents pinned to the published one refuse it.
//!
//! The digest is over the document's canonical JSON ([`canonical`]): compact, every object's keys sorted, so the
//! same settings always give the same bytes, whatever the order of a struct's fields, and anyone can recompute it
//! from the published document.

use std::fmt;

use serde::Serialize;
use serde_with::{DeserializeFromStr, SerializeDisplay};
use sha2::{Digest, Sha256};

/// SHA-256 of a configuration document; written (also in JSON and TOML) as 64 lowercase hex characters.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, SerializeDisplay, DeserializeFromStr,
)]
pub struct ConfigDigest(pub [u8; 32]);

/// Why text is not a configuration digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a configuration digest is 64 hex characters (SHA-256), got {0:?}")]
pub struct ConfigDigestError(pub String);

/// Why a configuration document could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("writing the configuration document as JSON: {0}")]
pub struct DocumentError(#[from] serde_json::Error);

/// `document` as JSON with every object's keys sorted: what is published and what [`ConfigDigest::of`] hashes
/// (written compactly).
pub fn canonical<T: Serialize + ?Sized>(document: &T) -> Result<serde_json::Value, DocumentError> {
    let mut value = serde_json::to_value(document)?;
    value.sort_all_objects();
    Ok(value)
}

impl ConfigDigest {
    /// The digest of `document`: SHA-256 of its [`canonical`] JSON, written compactly.
    pub fn of<T: Serialize + ?Sized>(document: &T) -> Result<Self, DocumentError> {
        let json = serde_json::to_vec(&canonical(document)?)?;
        Ok(ConfigDigest(Sha256::digest(&json).into()))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ConfigDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ConfigDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigDigest({self})")
    }
}

impl std::str::FromStr for ConfigDigest {
    type Err = ConfigDigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        match hex::decode_to_slice(text, &mut bytes) {
            Ok(()) => Ok(ConfigDigest(bytes)),
            Err(_) => Err(ConfigDigestError(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Doc {
        trusted: Vec<&'static str>,
        insecure: bool,
    }

    #[test]
    fn same_document_same_digest_and_any_change_another() {
        let a = ConfigDigest::of(&Doc {
            trusted: vec!["root-a"],
            insecure: false,
        })
        .unwrap();
        let again = ConfigDigest::of(&Doc {
            trusted: vec!["root-a"],
            insecure: false,
        })
        .unwrap();
        assert_eq!(a, again);
        for other in [
            Doc {
                trusted: vec!["root-a", "root-b"],
                insecure: false,
            },
            Doc {
                trusted: vec!["root-a"],
                insecure: true,
            },
        ] {
            assert_ne!(a, ConfigDigest::of(&other).unwrap());
        }
    }

    #[test]
    fn the_digest_ignores_field_order_and_is_that_of_the_published_text() {
        #[derive(Serialize)]
        struct Unsorted {
            zeta: u32,
            alpha: Vec<&'static str>,
        }
        let doc = Unsorted {
            zeta: 1,
            alpha: vec!["a"],
        };
        let published = serde_json::to_string(&canonical(&doc).unwrap()).unwrap();
        assert_eq!(published, r#"{"alpha":["a"],"zeta":1}"#);
        let reparsed: serde_json::Value = serde_json::from_str(&published).unwrap();
        assert_eq!(
            ConfigDigest::of(&doc).unwrap(),
            ConfigDigest::of(&reparsed).unwrap()
        );
        assert_eq!(
            ConfigDigest::of(&doc).unwrap().0,
            <[u8; 32]>::from(Sha256::digest(published.as_bytes())),
            "SHA-256 of the published text"
        );
    }

    #[test]
    fn hex_text_round_trips_and_bad_text_is_refused() {
        let d = ConfigDigest([0xab; 32]);
        let text = d.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ConfigDigest>().unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<ConfigDigest>(&json).unwrap(), d);
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(66)] {
            assert!(bad.parse::<ConfigDigest>().is_err(), "{bad:?}");
        }
    }
}
