//! Where a [`super::Sealer`]'s key comes from: the platform's sealing key, or a random key held in memory only.

use zeroize::Zeroizing;

use crate::platform::Platform;

/// A sealer's root key.
pub enum SealingRoot {
    /// The platform's sealing key (SEV-SNP derived key, or the simulated one): the same TEE, launched with the
    /// same measurement and guest policy, derives it again after a restart.
    Platform {
        /// The platform that derived it.
        platform: Platform,
        /// The key.
        key: Zeroizing<[u8; 32]>,
    },
    /// A random key for the life of the process: for platforms without a sealing key (TDX without a key service).
    MemoryOnly {
        /// The key.
        key: Zeroizing<[u8; 32]>,
    },
}

impl SealingRoot {
    /// A fresh memory-only root.
    pub fn memory_only() -> Self {
        Self::MemoryOnly {
            key: Zeroizing::new(rand::random()),
        }
    }

    pub(super) fn key(&self) -> &[u8] {
        match self {
            Self::Platform { key, .. } | Self::MemoryOnly { key } => key.as_slice(),
        }
    }
}

/// Why the platform's sealing key could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum SealingRootError {
    /// The guest device could not be opened.
    #[error("{device}: {reason}")]
    Device {
        /// The device.
        device: &'static str,
        /// Why.
        reason: String,
    },
    /// The firmware refused the key request.
    #[error("the firmware refused the derived-key request: {0}")]
    Refused(String),
}
