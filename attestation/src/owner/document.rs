//! The signed app policy document: what it holds, the exact bytes signed, signing and verification.
//!
//! A document is a JSON object with four string fields:
//!
//! ```json
//! {
//!   "format": "tee-gateway/app-policy/v1",
//!   "owner_key": "<64 hex digits: the owner's Ed25519 public key>",
//!   "policy": "{\"app_id\":\"<32 hex>\",\"version\":3,\"profile\":[{\"platform\":\"sev-snp\",...}]}",
//!   "signature": "<128 hex digits>"
//! }
//! ```
//!
//! The signed bytes are the ASCII label `tee-gateway/app-policy/v1:` followed by the UTF-8 bytes of the `policy`
//! string exactly as carried (the signature covers those bytes, not a re-encoding of them, so no canonical JSON
//! form is needed). `policy` is a JSON object with `app_id`, `version` (an unsigned integer; a gateway keeps the
//! highest it has seen) and `profile`, the list of accepted profiles in the same fields as the TOML profiles of
//! [`crate::policy`]. The signature is Ed25519 over those bytes, checked strictly.

use serde::{Deserialize, Serialize};

use super::key::{OwnerKey, OwnerPublicKey};
use super::OwnerError;
use crate::claims::Claims;
use crate::policy::{PolicyViolation, Profile};

/// The `format` of a version 1 document.
pub const FORMAT: &str = "tee-gateway/app-policy/v1";

/// The label signed before the `policy` bytes.
pub const SIGNATURE_LABEL: &[u8] = b"tee-gateway/app-policy/v1:";

/// What the owner signs: the app, the policy's version and its accepted profiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// The app id; it must be the one the signing key names.
    pub app_id: String,
    /// The policy's version: a gateway keeps the highest it has seen.
    pub version: u64,
    /// The accepted profiles: an instance must match one.
    pub profile: Vec<Profile>,
}

/// A profiles file in the TOML profile syntax (`[[profile]]` tables), the input of `gateway app sign-policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesFile {
    /// The profiles.
    #[serde(default)]
    pub profile: Vec<Profile>,
}

impl ProfilesFile {
    /// Parses the TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

/// A signed app policy document as carried (see the module documentation); [`SignedPolicy::verify`] makes it
/// usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    /// [`FORMAT`].
    pub format: String,
    /// The owner's Ed25519 public key, 64 hex digits.
    pub owner_key: String,
    /// The signed policy body, JSON text.
    pub policy: String,
    /// The Ed25519 signature over [`SIGNATURE_LABEL`] and `policy`, 128 hex digits.
    pub signature: String,
}

impl SignedPolicy {
    /// Signs a policy of `profiles` at `version` for the app `key` owns.
    pub fn sign(key: &OwnerKey, version: u64, profiles: Vec<Profile>) -> Result<Self, OwnerError> {
        let body = PolicyBody {
            app_id: key.app_id(),
            version,
            profile: profiles,
        };
        let policy = serde_json::to_string(&body).map_err(|e| OwnerError::Body(e.to_string()))?;
        Ok(Self::sign_bytes(key, policy))
    }

    /// Signs `policy` text as it is (tests use it to sign bodies that [`Self::sign`] would not write).
    pub fn sign_bytes(key: &OwnerKey, policy: String) -> Self {
        let signature = key.sign(&signed_bytes(&policy));
        Self {
            format: FORMAT.to_owned(),
            owner_key: key.public().to_hex(),
            policy,
            signature: hex::encode(signature),
        }
    }

    /// Parses a document's JSON text.
    pub fn from_json(text: &str) -> Result<Self, OwnerError> {
        serde_json::from_str(text).map_err(|e| OwnerError::Document(e.to_string()))
    }

    /// The document's JSON text (pretty-printed, one field a line).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the format, the signature, and that the signing key names the policy's app id; returns the policy.
    pub fn verify(&self) -> Result<VerifiedPolicy, OwnerError> {
        if self.format != FORMAT {
            return Err(OwnerError::Format(self.format.clone()));
        }
        let key = OwnerPublicKey::from_hex(&self.owner_key)?;
        let signature = hex::decode(self.signature.trim()).map_err(|_| OwnerError::BadSignature)?;
        key.verify(&signed_bytes(&self.policy), &signature)?;
        let body: PolicyBody =
            serde_json::from_str(&self.policy).map_err(|e| OwnerError::Body(e.to_string()))?;
        let key_app_id = key.app_id();
        if body.app_id != key_app_id {
            return Err(OwnerError::NotOwnersKey {
                app_id: body.app_id,
                key_app_id,
            });
        }
        Ok(VerifiedPolicy {
            owner_key: key,
            body,
            document: self.clone(),
        })
    }

    /// [`Self::verify`], and the policy must be for `app_id`.
    pub fn verify_for(&self, app_id: &str) -> Result<VerifiedPolicy, OwnerError> {
        let verified = self.verify()?;
        if verified.app_id() != app_id {
            return Err(OwnerError::OtherApp {
                expected: app_id.to_owned(),
                found: verified.app_id().to_owned(),
            });
        }
        Ok(verified)
    }
}

/// The bytes an owner signs for a `policy` text.
fn signed_bytes(policy: &str) -> Vec<u8> {
    [SIGNATURE_LABEL, policy.as_bytes()].concat()
}

/// A policy whose signature and owner were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPolicy {
    owner_key: OwnerPublicKey,
    body: PolicyBody,
    document: SignedPolicy,
}

impl VerifiedPolicy {
    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.body.app_id
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.body.version
    }

    /// The accepted profiles.
    pub fn profiles(&self) -> &[Profile] {
        &self.body.profile
    }

    /// The owner's key.
    pub fn owner_key(&self) -> &OwnerPublicKey {
        &self.owner_key
    }

    /// The signed document it came from (to store, and to hand on).
    pub fn document(&self) -> &SignedPolicy {
        &self.document
    }

    /// Whether `other` says the same (app, version and profiles), however it was encoded.
    pub fn same_content(&self, other: &VerifiedPolicy) -> bool {
        self.body == other.body
    }

    /// Checks an instance's claims against the profiles, returning the one that matched (the first).
    pub fn check(&self, claims: &Claims) -> Result<&Profile, PolicyViolation> {
        let subject = || {
            format!(
                "app {} (owner policy version {})",
                self.app_id(),
                self.version()
            )
        };
        let mut violations = Vec::new();
        for profile in self
            .profiles()
            .iter()
            .filter(|p| p.platform() == claims.platform)
        {
            match profile.check(claims) {
                Ok(()) => return Ok(profile),
                Err(v) => violations.push(v),
            }
        }
        if violations.is_empty() {
            Err(PolicyViolation::NoProfileForPlatform {
                subject: subject(),
                platform: claims.platform,
            })
        } else {
            Err(PolicyViolation::Refused {
                subject: subject(),
                violations,
            })
        }
    }
}
