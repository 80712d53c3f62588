//! WireGuard keys (Curve25519), written as standard base64 like `wg` does.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use boringtun::x25519;

use super::error::TunnelError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn decode_key(s: &str) -> Result<[u8; 32], TunnelError> {
    let bytes = B64
        .decode(s.trim())
        .map_err(|_| TunnelError::Key("not base64"))?;
    bytes
        .try_into()
        .map_err(|_| TunnelError::Key("a key is 32 bytes (44 base64 characters)"))
}

/// A peer's (or this endpoint's) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_x25519(self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = TunnelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(PublicKey)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// This endpoint's private key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct PrivateKey(x25519::StaticSecret);

impl PrivateKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        PrivateKey(x25519::StaticSecret::from(bytes))
    }

    /// The key from its 32 raw bytes (clamped as X25519 requires).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(x25519::StaticSecret::from(bytes))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.0).to_bytes())
    }

    /// The key in `wg`'s base64 form (for writing a key file; handle with care).
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.to_bytes())
    }

    pub(crate) fn secret(&self) -> &x25519::StaticSecret {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

impl FromStr for PrivateKey {
    type Err = TunnelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(Self::from_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_match_wg() {
        // `wg pubkey` of this private key (RFC 7748 test vector, Alice).
        let private: PrivateKey = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
            .parse()
            .unwrap();
        let public = private.public_key();
        assert_eq!(
            public.to_string(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
        assert_eq!(public.to_string().parse::<PublicKey>().unwrap(), public);
        assert_eq!(
            private.to_base64(),
            "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
        );
        assert!(!format!("{private:?}").contains("dwdt"));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!("not a key".parse::<PublicKey>().is_err());
        assert!("AAAA".parse::<PublicKey>().is_err());
        assert!("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"
            .parse::<PublicKey>()
            .is_err());
    }
}
