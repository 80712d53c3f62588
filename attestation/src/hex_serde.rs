//! Serde helpers that write byte arrays as lowercase hex strings.

use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

/// Serialize a byte slice as a lowercase hex string.
pub fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes.as_ref()))
}

/// Deserialize a fixed-size byte array from a hex string of exactly `2 * N` digits.
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let s = String::deserialize(d)?;
    let v = hex::decode(&s).map_err(D::Error::custom)?;
    let len = v.len();
    v.try_into()
        .map_err(|_| D::Error::custom(format!("expected {N} bytes of hex, got {len}")))
}
