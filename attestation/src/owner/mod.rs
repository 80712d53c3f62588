//! App owners and the policies they sign.
//!
//! Which CVMs may serve an app is decided by the app's owner, not by whoever runs the gateway. The owner holds an
//! Ed25519 key pair ([`OwnerKey`]); the app id is derived from its public key ([`app_id_of`]), so an app id names
//! the one key that may speak for it. The owner signs a policy document ([`SignedPolicy`]) holding the app id, a
//! version and the accepted profiles; [`SignedPolicy::verify`] checks the signature and that the key names the
//! app id, and returns a [`VerifiedPolicy`] whose [`VerifiedPolicy::check`] admits or refuses an instance's claims.
//!
//! `document` defines the exact bytes signed; `key` the app id derivation and the key file.

mod document;
mod key;

pub use document::{
    PolicyBody, ProfilesFile, SignedPolicy, VerifiedPolicy, FORMAT, SIGNATURE_LABEL,
};
pub use key::{app_id_of, OwnerKey, OwnerPublicKey, APP_ID_LABEL};

/// Why an owner key or a signed policy is not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnerError {
    /// The document is not a signed policy document (JSON with the four fields).
    #[error("not a signed app policy document: {0}")]
    Document(String),
    /// The document's format is not one this build knows.
    #[error("unknown app policy format {0:?} (this gateway knows \"{FORMAT}\")")]
    Format(String),
    /// The owner key is not an Ed25519 public key.
    #[error("owner key: {0}")]
    PublicKey(String),
    /// The signature does not verify under the document's owner key.
    #[error("the app policy's signature does not verify under its owner key")]
    BadSignature,
    /// The signed body is not a policy (app id, version, profiles).
    #[error("the signed app policy body is malformed: {0}")]
    Body(String),
    /// The policy names an app id that its signing key does not derive.
    #[error(
        "the app policy is for app {app_id}, but its signing key owns app {key_app_id}: only the key an app id is \
         derived from can sign its policy"
    )]
    NotOwnersKey {
        /// The app id in the policy.
        app_id: String,
        /// The app id the signing key derives.
        key_app_id: String,
    },
    /// The policy is for another app than the one it was brought for.
    #[error("the app policy is for app {found}, not {expected}")]
    OtherApp {
        /// The app it was brought for.
        expected: String,
        /// The app it names.
        found: String,
    },
    /// The key file is malformed.
    #[error("owner key file: {0}")]
    KeyFile(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl OwnerError {
    /// A stable label for logs, metrics and typed refusals.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Document(_) => "malformed_document",
            Self::Format(_) => "unknown_format",
            Self::PublicKey(_) => "bad_owner_key",
            Self::BadSignature => "bad_signature",
            Self::Body(_) => "malformed_body",
            Self::NotOwnersKey { .. } => "not_owners_key",
            Self::OtherApp { .. } => "other_app",
            Self::KeyFile(_) => "bad_key_file",
            Self::Io { .. } => "io",
        }
    }
}

#[cfg(test)]
mod tests;
