//! Sealing: secrets at rest that only the same TEE can read again.
//!
//! A [`Sealer`] encrypts a named secret (the gateway's WireGuard key, later its TLS keys and the ACME account)
//! so that the bytes written to disk, which the host can read, reveal nothing and cannot be altered unnoticed.
//! Its key comes from the platform where the platform has one:
//!
//! - **SEV-SNP**: the firmware's derived key (`MSG_KEY_REQ` through `/dev/sev-guest`), mixing in the launch
//!   measurement and the guest policy, so another image or a debuggable launch derives another key
//!   ([`SealingRoot::Platform`]). The simulated SEV-SNP attester derives its key likewise from the simulated
//!   vendor PKI's secret and the measurement it reports.
//! - **TDX** has no sealing key without a key service, and neither has the simulated TDX attester: the sealer is
//!   then **memory-only** ([`SealingRoot::MemoryOnly`]): a random key for the life of the process. What it sealed
//!   cannot be read after a restart ([`SealError::Ephemeral`]); its owner regenerates the secret, which is what
//!   a restarted TDX gateway does with its WireGuard key.
//!
//! Format of a sealed value (all integers one byte):
//!
//! ```text
//! "tg-seal1" | root (1 platform, 2 memory-only) | platform (Platform::code, 0 for memory-only) | nonce (24) | ciphertext and tag
//! ```
//!
//! The cipher is XChaCha20-Poly1305 with a random nonce; its key is HKDF-SHA256 of the root key with the salt
//! `tee-gateway/v1/sealing:` (the sealing label of [`crate::binding`]) and the secret's name as info; the
//! associated data is the 10 header bytes and the name. So a value sealed under one name does not unseal under
//! another, and a changed header byte, nonce or ciphertext is refused.

mod root;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

pub use root::{SealingRoot, SealingRootError};

use crate::attester::Attester;
use crate::platform::Platform;

/// The first bytes of every sealed value.
const MAGIC: &[u8; 8] = b"tg-seal1";
/// Header: magic, root kind, platform.
const HEADER_LEN: usize = MAGIC.len() + 2;
const NONCE_LEN: usize = 24;
/// The HKDF salt: the sealing purpose's label.
const SALT: &[u8] = b"tee-gateway/v1/sealing:";

const ROOT_PLATFORM: u8 = 1;
const ROOT_MEMORY: u8 = 2;

/// Why a value could not be sealed or unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The platform's sealing key could not be obtained.
    #[error("sealing key: {0}")]
    Root(#[from] SealingRootError),
    /// The bytes are not a sealed value of this format.
    #[error("{name}: not a sealed value ({why})")]
    Malformed {
        /// The secret's name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Sealed by a memory-only sealer of another process: it cannot be recovered.
    #[error("{name}: sealed in memory only by an earlier process; it cannot be read again")]
    Ephemeral {
        /// The secret's name.
        name: String,
    },
    /// Sealed with another platform's key.
    #[error("{name}: sealed on {sealed_on}, but this sealer is {current}")]
    OtherPlatform {
        /// The secret's name.
        name: String,
        /// Where it was sealed.
        sealed_on: String,
        /// What this sealer is.
        current: String,
    },
    /// Authentication failed: another TEE, measurement or guest policy sealed it, or the bytes were altered.
    #[error(
        "{name}: the sealed value does not open with this TEE's key (another image, or altered)"
    )]
    Unauthentic {
        /// The secret's name.
        name: String,
    },
    /// The cipher refused to encrypt (cannot happen with a 32-byte key; reported rather than assumed).
    #[error("{name}: encryption failed")]
    Encrypt {
        /// The secret's name.
        name: String,
    },
}

/// Seals and unseals named secrets with one root key.
pub struct Sealer {
    root: SealingRoot,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", self.describe())
    }
}

impl Sealer {
    /// The sealer of the TEE `attester` speaks for: its platform's sealing key, or memory-only where the
    /// platform has none. An error when the platform should have a key but did not give it.
    pub fn for_attester(attester: &dyn Attester) -> Result<Self, SealError> {
        let root = match attester.sealing_key()? {
            Some(key) => SealingRoot::Platform {
                platform: attester.platform(),
                key,
            },
            None => SealingRoot::memory_only(),
        };
        Ok(Self { root })
    }

    /// A sealer over `root`.
    pub fn new(root: SealingRoot) -> Self {
        Self { root }
    }

    /// Whether what this sealer seals survives a restart.
    pub fn is_durable(&self) -> bool {
        matches!(self.root, SealingRoot::Platform { .. })
    }

    /// `"sev-snp derived key"`, `"memory-only"`, ...: for logs.
    pub fn describe(&self) -> String {
        match &self.root {
            SealingRoot::Platform { platform, .. } => format!("{platform} sealing key"),
            SealingRoot::MemoryOnly { .. } => "memory-only".to_owned(),
        }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        let (kind, platform) = match &self.root {
            SealingRoot::Platform { platform, .. } => (ROOT_PLATFORM, platform_code(*platform)),
            SealingRoot::MemoryOnly { .. } => (ROOT_MEMORY, 0),
        };
        header[MAGIC.len()] = kind;
        header[MAGIC.len() + 1] = platform;
        header
    }

    fn cipher(&self, name: &str) -> XChaCha20Poly1305 {
        let hk = Hkdf::<Sha256>::new(Some(SALT), self.root.key());
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        if hk.expand(name.as_bytes(), key.as_mut()).is_err() {
            unreachable!("HKDF-SHA256 expands to 32 bytes");
        }
        XChaCha20Poly1305::new(key.as_ref().into())
    }

    /// Seals `plaintext` as the secret `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let header = self.header();
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = [header.as_slice(), name.as_bytes()].concat();
        let ciphertext = self
            .cipher(name)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Encrypt {
                name: name.to_owned(),
            })?;
        Ok([header.as_slice(), &nonce, &ciphertext].concat())
    }

    /// Unseals the secret `name` from `sealed`.
    pub fn unseal(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let malformed = |why| SealError::Malformed {
            name: name.to_owned(),
            why,
        };
        if sealed.len() < HEADER_LEN + NONCE_LEN + 16 {
            return Err(malformed("too short"));
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        if &header[..MAGIC.len()] != MAGIC {
            return Err(malformed("no tg-seal1 header"));
        }
        let (kind, platform) = (header[MAGIC.len()], header[MAGIC.len() + 1]);
        let ours = self.header();
        if header != ours {
            return Err(match (kind, platform_of(platform)) {
                (ROOT_MEMORY, _) => SealError::Ephemeral {
                    name: name.to_owned(),
                },
                (ROOT_PLATFORM, Some(p)) => SealError::OtherPlatform {
                    name: name.to_owned(),
                    sealed_on: format!("{p}"),
                    current: self.describe(),
                },
                _ => malformed("unknown sealing root"),
            });
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = [header, name.as_bytes()].concat();
        let plaintext = self
            .cipher(name)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| match kind {
                ROOT_MEMORY => SealError::Ephemeral {
                    name: name.to_owned(),
                },
                _ => SealError::Unauthentic {
                    name: name.to_owned(),
                },
            })?;
        Ok(Zeroizing::new(plaintext))
    }
}

/// A platform's byte in the header: its position in [`Platform::ALL`], from 1.
fn platform_code(platform: Platform) -> u8 {
    Platform::ALL
        .iter()
        .position(|p| *p == platform)
        .map_or(0, |i| i as u8 + 1)
}

fn platform_of(code: u8) -> Option<Platform> {
    Platform::ALL
        .get(usize::from(code).checked_sub(1)?)
        .copied()
}

#[cfg(test)]
mod tests;
