//! The app owner's Ed25519 key pair, the app id it names, and the key file that holds it.
//!
//! An app id is self-certifying: the first 16 bytes of SHA-256 over the ASCII label `tee-gateway/app-id/v1:`
//! followed by the owner's 32-byte Ed25519 public key, written as 32 lowercase hex digits. Whoever shows a policy
//! signed by a key that hashes to the app id speaks for the app; nobody else can.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::OwnerError;

/// The label hashed before the owner's public key to derive its app id.
pub const APP_ID_LABEL: &[u8] = b"tee-gateway/app-id/v1:";

/// How many bytes of the hash make the app id (32 hex digits).
const APP_ID_BYTES: usize = 16;

/// The app id that `key` names: 32 lowercase hex digits.
pub fn app_id_of(key: &OwnerPublicKey) -> String {
    let mut hash = Sha256::new();
    hash.update(APP_ID_LABEL);
    hash.update(key.0.as_bytes());
    hex::encode(&hash.finalize()[..APP_ID_BYTES])
}

/// An app owner's public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OwnerPublicKey(VerifyingKey);

impl OwnerPublicKey {
    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, OwnerError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes)
            .map_err(|e| OwnerError::PublicKey(format!("not 64 hex digits: {e}")))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| OwnerError::PublicKey(e.to_string()))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// The app id this key names.
    pub fn app_id(&self) -> String {
        app_id_of(self)
    }

    /// Checks an Ed25519 signature over `message` (strictly: no malleable or small-order encodings).
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), OwnerError> {
        let signature = Signature::from_slice(signature).map_err(|_| OwnerError::BadSignature)?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| OwnerError::BadSignature)
    }
}

impl fmt::Debug for OwnerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerPublicKey({})", self.to_hex())
    }
}

impl fmt::Display for OwnerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An app owner's signing key. Its `Debug` output never shows the secret.
pub struct OwnerKey(SigningKey);

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerKey(app {})", self.public().app_id())
    }
}

/// The key file, TOML: the secret and, for a reader's convenience, the public key and app id it implies.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    app_id: String,
    public_key: String,
    secret_key: String,
}

impl OwnerKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self(SigningKey::from_bytes(&seed))
    }

    /// The key whose 32-byte Ed25519 secret is `seed` (tests, and keys kept elsewhere).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public(&self) -> OwnerPublicKey {
        OwnerPublicKey(self.0.verifying_key())
    }

    /// The app id this key owns.
    pub fn app_id(&self) -> String {
        self.public().app_id()
    }

    /// Signs `message` (the caller adds the domain-separation label).
    pub(super) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The key file's text (TOML with the secret in hex, the public key and the app id).
    pub fn to_file_text(&self) -> String {
        let file = KeyFile {
            app_id: self.app_id(),
            public_key: self.public().to_hex(),
            secret_key: hex::encode(self.0.to_bytes()),
        };
        let body = toml::to_string(&file).unwrap_or_default();
        format!(
            "# tee-gateway app owner key. Keep it secret: whoever holds it decides which CVMs may serve app {}.\n{body}",
            file.app_id
        )
    }

    /// Parses a key file's text; the public key and app id in it must be the ones the secret implies.
    pub fn from_file_text(text: &str) -> Result<Self, OwnerError> {
        let file: KeyFile =
            toml::from_str(text).map_err(|e| OwnerError::KeyFile(e.message().to_owned()))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(file.secret_key.trim(), &mut seed)
            .map_err(|e| OwnerError::KeyFile(format!("secret_key is not 64 hex digits: {e}")))?;
        let key = Self::from_seed(seed);
        if key.public().to_hex() != file.public_key.trim().to_ascii_lowercase() {
            return Err(OwnerError::KeyFile(
                "public_key is not the public half of secret_key".into(),
            ));
        }
        if key.app_id() != file.app_id.trim().to_ascii_lowercase() {
            return Err(OwnerError::KeyFile(format!(
                "app_id {} is not the one the key names ({})",
                file.app_id,
                key.app_id()
            )));
        }
        Ok(key)
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<Self, OwnerError> {
        let text = std::fs::read_to_string(path).map_err(|source| OwnerError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_file_text(&text).map_err(|e| match e {
            OwnerError::KeyFile(what) => OwnerError::KeyFile(format!("{}: {what}", path.display())),
            other => other,
        })
    }

    /// Writes a new key file readable by its owner only (mode 0600); an existing file is never overwritten.
    pub fn write_new(&self, path: &Path) -> Result<(), OwnerError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| OwnerError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(self.to_file_text().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}
