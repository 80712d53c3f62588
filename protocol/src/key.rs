//! WireGuard keys (Curve25519), written as standard base64 like `wg` prints them.
//!
//! One [`PublicKey`] type serves the control messages (where it travels as a base64 string) and the tunnel
//! (where it names a peer). Parsing refuses the points of small order: a Diffie-Hellman exchange with one of
//! them gives a shared secret an attacker knows, and no real key pair produces one.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519;

/// Why bytes or a string are not a WireGuard key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The string is not standard base64.
    #[error("WireGuard key is not valid base64: {0}")]
    Base64(base64::DecodeError),
    /// The decoded key does not have 32 bytes.
    #[error("WireGuard key must be 32 bytes, got {0}")]
    Length(usize),
    /// The public key is a point of small order (all zeros among them), which no real key pair produces.
    #[error("WireGuard public key is a point of small order")]
    SmallOrder,
}

/// The u-coordinates of the Curve25519 points of order 1, 2, 4 and 8, and their encodings above the field
/// prime p = 2^255 - 19, little-endian. X25519 ignores the top bit, so it is masked off before comparing.
const SMALL_ORDER: [[u8; 32]; 7] = {
    let mut table = [[0u8; 32]; 7];
    // 0 and 1.
    table[1][0] = 1;
    // The two points of order 8.
    table[2] = [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ];
    table[3] = [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ];
    // p - 1 (order 2), p (0 again) and p + 1 (1 again).
    let mut i = 4;
    while i < 7 {
        let mut b = 1;
        while b < 31 {
            table[i][b] = 0xff;
            b += 1;
        }
        table[i][0] = 0xe8 + i as u8;
        table[i][31] = 0x7f;
        i += 1;
    }
    table
};

/// Whether `bytes` encode a point of small order.
fn is_small_order(bytes: &[u8; 32]) -> bool {
    let mut masked = *bytes;
    masked[31] &= 0x7f;
    SMALL_ORDER.contains(&masked)
}

fn decode(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD.decode(s.trim()).map_err(KeyError::Base64)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(len))
}

/// A WireGuard (Curve25519) public key: a peer's, this endpoint's, or one carried in a control message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 raw bytes; points of small order are refused.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        if is_small_order(&bytes) {
            return Err(KeyError::SmallOrder);
        }
        Ok(PublicKey(bytes))
    }

    /// The key from a slice of exactly 32 bytes; points of small order are refused.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Self::from_bytes(array)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in standard base64, as `wg` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub(crate) fn to_x25519(self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(decode(s)?)
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

    /// The matching public key (never of small order: a clamped scalar times the base point has the large
    /// prime order).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.0).to_bytes())
    }

    /// The key in `wg`'s base64 form (for writing a key file; handle with care).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
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
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(Self::from_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn serde_is_the_base64_string() {
        let key = PublicKey::from_bytes([7u8; 32]).unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{}\"", STANDARD.encode([7u8; 32])));
        assert_eq!(json.len(), 44 + 2);
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        let zero = format!("\"{}\"", STANDARD.encode([0u8; 32]));
        assert!(serde_json::from_str::<PublicKey>(&zero).is_err());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let not_base64 = |r: Result<PublicKey, KeyError>| matches!(r, Err(KeyError::Base64(_)));
        assert!(not_base64("not a key".parse()));
        assert!(not_base64(
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo".parse()
        ));
        assert!(matches!(
            "not base64!".parse::<PrivateKey>(),
            Err(KeyError::Base64(_))
        ));
        for (text, len) in [
            ("AAAA".to_string(), 3),
            (STANDARD.encode([1u8; 31]), 31),
            (STANDARD.encode([1u8; 33]), 33),
        ] {
            assert_eq!(text.parse::<PublicKey>(), Err(KeyError::Length(len)));
        }
        assert_eq!(PublicKey::from_slice(&[1u8; 31]), Err(KeyError::Length(31)));
    }

    /// Every refused encoding really is of small order: X25519 with any private key gives the all-zero
    /// (non-contributory) shared secret.
    #[test]
    fn each_small_order_point_is_refused_in_both_encodings() {
        let secret = PrivateKey::generate();
        for point in SMALL_ORDER {
            for top_bit in [0, 0x80] {
                let mut bytes = point;
                bytes[31] |= top_bit;
                assert_eq!(
                    PublicKey::from_bytes(bytes),
                    Err(KeyError::SmallOrder),
                    "{bytes:02x?}"
                );
                assert_eq!(
                    STANDARD.encode(bytes).parse::<PublicKey>(),
                    Err(KeyError::SmallOrder)
                );
                let shared = secret
                    .secret()
                    .diffie_hellman(&x25519::PublicKey::from(bytes));
                assert!(!shared.was_contributory(), "{bytes:02x?}");
            }
        }
    }

    proptest! {
        /// Every other 32 bytes are accepted, and a Diffie-Hellman exchange with them is contributory.
        #[test]
        fn other_keys_are_accepted_and_contributory(bytes in any::<[u8; 32]>()) {
            let mut masked = bytes;
            masked[31] &= 0x7f;
            prop_assume!(!SMALL_ORDER.contains(&masked));
            let key = PublicKey::from_bytes(bytes).unwrap();
            prop_assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
            let shared = PrivateKey::generate().secret().diffie_hellman(&key.to_x25519());
            prop_assert!(shared.was_contributory());
        }
    }
}
