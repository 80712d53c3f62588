//! WireGuard public keys in control messages: standard base64 of 32 bytes, as `wg` prints them.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a WireGuard public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The string is not standard base64.
    #[error("WireGuard public key is not valid base64: {0}")]
    Base64(String),
    /// The decoded key does not have 32 bytes.
    #[error("WireGuard public key must be 32 bytes, got {0}")]
    Length(usize),
    /// The key is all zeros, which no real key pair produces.
    #[error("WireGuard public key is all zeros")]
    AllZero,
}

/// A Curve25519 public key used by WireGuard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireGuardKey([u8; 32]);

impl WireGuardKey {
    /// Wraps raw key bytes. All-zero keys are refused.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        if bytes == [0u8; 32] {
            return Err(KeyError::AllZero);
        }
        Ok(Self(bytes))
    }

    /// Parses a key from a byte slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Self::from_bytes(array)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in standard base64, as `wg` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl FromStr for WireGuardKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        Self::from_slice(&bytes)
    }
}

impl fmt::Display for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WireGuardKey({})", self.to_base64())
    }
}

impl Serialize for WireGuardKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for WireGuardKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_base64() {
        let key = WireGuardKey::from_bytes([7u8; 32]).unwrap();
        let text = key.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<WireGuardKey>().unwrap(), key);
    }

    #[test]
    fn refuses_wrong_lengths_and_garbage() {
        assert_eq!(
            STANDARD.encode([1u8; 31]).parse::<WireGuardKey>(),
            Err(KeyError::Length(31))
        );
        assert_eq!(
            STANDARD.encode([1u8; 33]).parse::<WireGuardKey>(),
            Err(KeyError::Length(33))
        );
        assert!(matches!(
            "not base64!".parse::<WireGuardKey>(),
            Err(KeyError::Base64(_))
        ));
        assert_eq!(
            STANDARD.encode([0u8; 32]).parse::<WireGuardKey>(),
            Err(KeyError::AllZero)
        );
    }
}
