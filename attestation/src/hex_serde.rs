//! Serde helpers that write byte arrays as lowercase hex strings, for `#[serde(with = "...")]`: this module for a
//! `[u8; N]`, [`option`] for an optional one, [`list`] and [`option_list`] for allow lists, [`rtmrs`] for the
//! four TDX RTMRs. Writing is `hex`'s; reading insists on exactly `2 * N` digits and says how many bytes it got.

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

pub(crate) use hex::serde::serialize;

/// Read exactly `N` bytes from hex text.
fn bytes<const N: usize, E: serde::de::Error>(text: &str) -> Result<[u8; N], E> {
    let bytes = hex::decode(text).map_err(E::custom)?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| E::custom(format!("expected {N} bytes of hex, got {}", bytes.len())))
}

/// Deserialize a fixed-size byte array from a hex string of exactly `2 * N` digits.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    bytes(&String::deserialize(d)?)
}

/// An optional byte array (absent or one hex string).
pub(crate) mod option {
    use super::*;

    /// Serialize as a hex string, or as nothing.
    pub(crate) fn serialize<S: Serializer, const N: usize>(
        value: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map(hex::encode).serialize(s)
    }

    /// Deserialize a present value (absence is the field's `default`).
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

/// A non-empty list of byte arrays (an allow list), as a list of hex strings.
pub(crate) mod list {
    use super::*;

    /// Serialize as a list of hex strings.
    pub(crate) fn serialize<S: Serializer, const N: usize>(
        values: &[[u8; N]],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        values
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    /// Deserialize a list of at least one hex string.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Vec<[u8; N]>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        if texts.is_empty() {
            return Err(D::Error::custom(
                "an allow list must name at least one value (omit an optional list to allow any value)",
            ));
        }
        texts.iter().map(|t| bytes(t)).collect()
    }
}

/// An optional allow list: any value when absent.
pub(crate) mod option_list {
    use super::*;

    /// Serialize as a list of hex strings, or as nothing.
    pub(crate) fn serialize<S: Serializer, const N: usize>(
        values: &Option<Vec<[u8; N]>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match values {
            Some(list) => super::list::serialize(list, s),
            None => s.serialize_none(),
        }
    }

    /// Deserialize a present list (absence is the field's `default`).
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<Vec<[u8; N]>>, D::Error> {
        super::list::deserialize(d).map(Some)
    }
}

/// The four 48-byte RTMRs of a TD, as a list of four hex strings.
pub(crate) mod rtmrs {
    use super::*;

    /// Serialise as a list of four hex strings.
    pub(crate) fn serialize<S: Serializer>(regs: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
        regs.iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    /// Deserialise from a list of four hex strings.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[[u8; 48]; 4], D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        let regs: [String; 4] = list.try_into().map_err(|l: Vec<String>| {
            D::Error::custom(format!("expected 4 RTMRs, got {}", l.len()))
        })?;
        let mut out = [[0u8; 48]; 4];
        for (slot, text) in out.iter_mut().zip(&regs) {
            *slot = bytes(text)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "super")]
        id: [u8; 4],
        #[serde(default, with = "option", skip_serializing_if = "Option::is_none")]
        host: Option<[u8; 2]>,
        #[serde(with = "list")]
        allowed: Vec<[u8; 2]>,
        #[serde(default, with = "option_list", skip_serializing_if = "Option::is_none")]
        more: Option<Vec<[u8; 2]>>,
    }

    #[test]
    fn arrays_round_trip_as_lowercase_hex() {
        let s = Sample {
            id: [0xde, 0xad, 0xbe, 0xef],
            host: Some([0xab, 0xcd]),
            allowed: vec![[1, 2]],
            more: None,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"id":"deadbeef","host":"abcd","allowed":["0102"]}"#
        );
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), s);
    }

    #[test]
    fn wrong_lengths_and_empty_lists_are_refused_with_a_reason() {
        let e = serde_json::from_str::<Sample>(r#"{"id":"dead","allowed":["0102"]}"#).unwrap_err();
        assert!(
            e.to_string().contains("expected 4 bytes of hex, got 2"),
            "{e}"
        );
        let e = serde_json::from_str::<Sample>(r#"{"id":"deadbeef","allowed":[]}"#).unwrap_err();
        assert!(e.to_string().contains("at least one value"), "{e}");
        let e = serde_json::from_str::<Sample>(r#"{"id":"zz","allowed":["0102"]}"#).unwrap_err();
        assert!(e.to_string().contains("Invalid character"), "{e}");
    }
}
