//! Serde helpers that write fixed-size byte arrays as lowercase hex strings.

use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

/// Serialise a byte array as a hex string.
pub fn serialize<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes))
}

/// Deserialise a byte array from a hex string of exactly `2 * N` digits.
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    let text = String::deserialize(deserializer)?;
    let bytes = hex::decode(&text).map_err(D::Error::custom)?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| D::Error::custom(format!("expected {N} bytes of hex, got {}", bytes.len())))
}

/// The same for an array of four 48-byte registers (RTMR0-3).
pub mod rtmrs {
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    /// Serialise as a list of four hex strings.
    pub fn serialize<S: Serializer>(
        regs: &[[u8; 48]; 4],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        regs.iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .serialize(serializer)
    }

    /// Deserialise from a list of four hex strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[[u8; 48]; 4], D::Error> {
        let list = Vec::<String>::deserialize(deserializer)?;
        if list.len() != 4 {
            return Err(D::Error::custom(format!(
                "expected 4 RTMRs, got {}",
                list.len()
            )));
        }
        let mut out = [[0u8; 48]; 4];
        for (slot, text) in out.iter_mut().zip(&list) {
            let bytes = hex::decode(text).map_err(D::Error::custom)?;
            *slot = <[u8; 48]>::try_from(bytes.as_slice()).map_err(|_| {
                D::Error::custom(format!("expected 48 bytes of hex, got {}", bytes.len()))
            })?;
        }
        Ok(out)
    }
}
