//! Values of `agent.toml` that have rules of their own: the TUN device's name and MTU.

use std::fmt;

/// A Linux network interface name: 1 to 15 bytes, no `/`, `:` or white space, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The TUN device's MTU: at least IPv6's minimum link MTU and at most what the tunnel endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtu(u16);

/// Why a number is not a usable MTU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is outside {}..={}", Mtu::MIN, Mtu::MAX)]
pub struct MtuError;

impl Mtu {
    /// The smallest accepted MTU (IPv6's minimum link MTU).
    pub const MIN: u16 = 1280;
    /// The largest accepted MTU (the largest the tunnel endpoint accepts).
    pub const MAX: u16 = *protocol::tunnel::MTU_RANGE.end();

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtus_the_endpoint_accepts() {
        assert!(protocol::tunnel::MTU_RANGE.contains(&Mtu::MIN));
        assert_eq!(Mtu::new(1420).map(Mtu::get), Ok(1420));
        assert!(Mtu::new(Mtu::MIN).is_ok() && Mtu::new(Mtu::MAX).is_ok());
        for bad in [0, 10, 1279, 2001, 4000, 9000] {
            assert_eq!(Mtu::new(bad), Err(MtuError), "{bad}");
        }
        assert_eq!(MtuError.to_string(), "is outside 1280..=2000");
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
