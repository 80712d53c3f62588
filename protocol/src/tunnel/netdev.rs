//! The TUN device's name and MTU as checked values, so that a configuration that parses is one the endpoint
//! accepts. Both deserialize from their plain TOML forms (a string, a number) and refuse bad values while parsing.

use std::fmt;

use super::{DEFAULT_MTU, MTU_RANGE};

/// A Linux network interface name: 1 to 15 bytes, no `/`, `:` or white space, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct InterfaceName(String);

/// Why a string is not an interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not a valid interface name (1-15 characters, no `/`, `:` or white space)")]
pub struct InterfaceNameError;

impl InterfaceName {
    /// Longest name the kernel accepts (`IFNAMSIZ` minus the terminating NUL).
    pub const MAX_LEN: usize = 15;

    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, InterfaceNameError> {
        let valid = (1..=Self::MAX_LEN).contains(&name.len())
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InterfaceNameError)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(&name).map_err(|e| format!("{name:?} {e}"))
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The TUN device's MTU: at least IPv6's minimum link MTU and at most what the tunnel endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(try_from = "u16")]
pub struct Mtu(u16);

/// Why a number is not a usable MTU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is outside {}..={}", Mtu::MIN, Mtu::MAX)]
pub struct MtuError;

impl Mtu {
    /// The smallest accepted MTU (IPv6's minimum link MTU).
    pub const MIN: u16 = 1280;
    /// The largest accepted MTU (the largest the tunnel endpoint accepts).
    pub const MAX: u16 = *MTU_RANGE.end();

    /// Checks `mtu`.
    pub fn new(mtu: u16) -> Result<Self, MtuError> {
        if (Self::MIN..=Self::MAX).contains(&mtu) {
            Ok(Self(mtu))
        } else {
            Err(MtuError)
        }
    }

    /// The value.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for Mtu {
    fn default() -> Self {
        Self(DEFAULT_MTU)
    }
}

impl TryFrom<u16> for Mtu {
    type Error = String;

    fn try_from(mtu: u16) -> Result<Self, Self::Error> {
        Self::new(mtu).map_err(|e| format!("mtu = {mtu} {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtus_the_endpoint_accepts() {
        assert!(MTU_RANGE.contains(&Mtu::MIN));
        assert_eq!(Mtu::new(1420).map(Mtu::get), Ok(1420));
        assert!(Mtu::new(Mtu::MIN).is_ok() && Mtu::new(Mtu::MAX).is_ok());
        for bad in [0, 10, 1279, 2001, 4000, 9000] {
            assert_eq!(Mtu::new(bad), Err(MtuError), "{bad}");
        }
        assert_eq!(MtuError.to_string(), "is outside 1280..=2000");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Device {
        interface: InterfaceName,
        mtu: Mtu,
    }

    #[test]
    fn bad_values_are_refused_while_parsing() {
        let ok: Device = toml::from_str("interface = \"tg0\"\nmtu = 1420\n").unwrap();
        assert_eq!((ok.interface.as_str(), ok.mtu.get()), ("tg0", 1420));
        let e = toml::from_str::<Device>("interface = \"tg0\"\nmtu = 4000\n").unwrap_err();
        assert!(
            e.to_string().contains("mtu = 4000 is outside 1280..=2000"),
            "{e}"
        );
        let e = toml::from_str::<Device>("interface = \"a/b\"\nmtu = 1420\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("\"a/b\" is not a valid interface name"),
            "{e}"
        );
        assert_eq!(Mtu::default().get(), DEFAULT_MTU);
    }

    #[test]
    fn interface_names() {
        for good in ["tga0", "wg-agent.1", "a", "abcdefghijklmno"] {
            assert_eq!(InterfaceName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "a/b",
            "a:b",
            "a b",
            "tab\t",
        ] {
            assert_eq!(InterfaceName::new(bad), Err(InterfaceNameError), "{bad:?}");
        }
    }
}
