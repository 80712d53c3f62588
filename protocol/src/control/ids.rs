//! App and instance ids: lowercase hexadecimal, 8 to 40 characters.
//!
//! They appear in host names (`<id>[-<port>][s|g].<base-domain>`), so the grammar is strict. Parsing accepts
//! upper-case input and normalises it to lower case, since host names are matched case-insensitively.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shortest id accepted.
pub const MIN_ID_LEN: usize = 8;
/// Longest id accepted.
pub const MAX_ID_LEN: usize = 40;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Too short or too long.
    #[error("id {id:?} has {len} characters; ids have {MIN_ID_LEN} to {MAX_ID_LEN} hexadecimal characters")]
    Length {
        /// The offending id (truncated to 64 characters).
        id: String,
        /// Its length.
        len: usize,
    },
    /// A character that is not a hexadecimal digit.
    #[error("id {id:?} contains {ch:?}; ids are hexadecimal (0-9, a-f)")]
    Character {
        /// The offending id.
        id: String,
        /// The first bad character.
        ch: char,
    },
}

fn parse_id(s: &str) -> Result<String, IdError> {
    let len = s.chars().count();
    if !(MIN_ID_LEN..=MAX_ID_LEN).contains(&len) {
        return Err(IdError::Length {
            id: s.chars().take(64).collect(),
            len,
        });
    }
    if let Some(ch) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(IdError::Character {
            id: s.to_string(),
            ch,
        });
    }
    Ok(s.to_ascii_lowercase())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id as lowercase hex.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_id(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The id of an application: every instance of one app runs the same measured image and policy.
    AppId
);
id_type!(
    /// The id of one instance (one CVM) of an app, chosen by the agent and kept across its restarts.
    InstanceId
);

impl InstanceId {
    /// A fresh random instance id of 32 hex characters.
    pub fn random() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(hex::encode(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hex_and_lowercases() {
        let id: AppId = "DEADBEEF111111111111111111111111".parse().unwrap();
        assert_eq!(id.as_str(), "deadbeef111111111111111111111111");
        assert!("deadbeef".parse::<AppId>().is_ok());
        assert!("a".repeat(40).parse::<InstanceId>().is_ok());
    }

    #[test]
    fn refuses_bad_ids() {
        assert!(matches!(
            "deadbee".parse::<AppId>(),
            Err(IdError::Length { len: 7, .. })
        ));
        assert!(matches!(
            "a".repeat(41).parse::<AppId>(),
            Err(IdError::Length { len: 41, .. })
        ));
        assert!(matches!(
            "deadbeeg".parse::<AppId>(),
            Err(IdError::Character { ch: 'g', .. })
        ));
        assert!(matches!(
            "dead-beef".parse::<AppId>(),
            Err(IdError::Character { ch: '-', .. })
        ));
        assert!(matches!(
            "".parse::<InstanceId>(),
            Err(IdError::Length { len: 0, .. })
        ));
    }

    #[test]
    fn random_instance_ids_are_valid_and_distinct() {
        let a = InstanceId::random();
        let b = InstanceId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<InstanceId>().unwrap(), a);
    }
}
