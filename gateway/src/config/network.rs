//! An IPv4 network in CIDR notation (`10.0.0.0/8`), as the tunnel address plan uses it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string or address does not fit a tunnel network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// Not `a.b.c.d/len`.
    #[error("{0:?} is not an IPv4 network in CIDR notation (like 10.0.0.0/8)")]
    Syntax(String),
    /// The prefix length is above 32.
    #[error("prefix length {0} is above 32")]
    PrefixLength(u8),
    /// Host bits are set in the network address.
    #[error("{0} has host bits set; did you mean {1}?")]
    HostBits(String, String),
    /// The address is outside the network, or is its network or broadcast address.
    #[error("{addr} is not a usable host address of {network}")]
    NotAHost {
        /// The address.
        addr: Ipv4Addr,
        /// The network.
        network: String,
    },
}

/// An IPv4 network: base address and prefix length, host bits clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelNetwork {
    base: u32,
    prefix_len: u8,
}

impl TunnelNetwork {
    /// Builds a network; the base must have no host bits set.
    pub fn new(base: Ipv4Addr, prefix_len: u8) -> Result<Self, NetworkError> {
        if prefix_len > 32 {
            return Err(NetworkError::PrefixLength(prefix_len));
        }
        let net = Self {
            base: u32::from(base),
            prefix_len,
        };
        if net.base & !net.mask() != 0 {
            let fixed = Self {
                base: net.base & net.mask(),
                prefix_len,
            };
            return Err(NetworkError::HostBits(
                format!("{base}/{prefix_len}"),
                fixed.to_string(),
            ));
        }
        Ok(net)
    }

    /// The network mask as an integer.
    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// The network address.
    pub fn base(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether the address lies in the network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == self.base
    }

    /// The first and last usable host addresses (network and broadcast excluded), as integers.
    pub fn host_range(&self) -> (u32, u32) {
        let broadcast = self.base | !self.mask();
        (self.base.saturating_add(1), broadcast.saturating_sub(1))
    }

    /// Checks that an address is a usable host of this network.
    pub fn check_host(&self, addr: Ipv4Addr) -> Result<(), NetworkError> {
        let (first, last) = self.host_range();
        let a = u32::from(addr);
        if self.contains(addr) && a >= first && a <= last {
            Ok(())
        } else {
            Err(NetworkError::NotAHost {
                addr,
                network: self.to_string(),
            })
        }
    }
}

impl FromStr for TunnelNetwork {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| NetworkError::Syntax(s.to_string()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| NetworkError::Syntax(s.to_string()))?;
        let len: u8 = len
            .parse()
            .map_err(|_| NetworkError::Syntax(s.to_string()))?;
        Self::new(addr, len)
    }
}

impl fmt::Display for TunnelNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base(), self.prefix_len)
    }
}

impl fmt::Debug for TunnelNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelNetwork({self})")
    }
}

impl Serialize for TunnelNetwork {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TunnelNetwork {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let n: TunnelNetwork = "10.0.0.0/8".parse().unwrap();
        assert_eq!(n.prefix_len(), 8);
        assert!(n.contains(Ipv4Addr::new(10, 255, 0, 1)));
        assert!(!n.contains(Ipv4Addr::new(11, 0, 0, 1)));
        assert!(n.check_host(Ipv4Addr::new(10, 0, 0, 1)).is_ok());
        assert!(n.check_host(Ipv4Addr::new(10, 0, 0, 0)).is_err());
        assert!(n.check_host(Ipv4Addr::new(10, 255, 255, 255)).is_err());
        assert_eq!(n.host_range(), (0x0a00_0001, 0x0aff_fffe));
        assert!(
            matches!("10.0.0.1/8".parse::<TunnelNetwork>(), Err(NetworkError::HostBits(_, fixed)) if fixed == "10.0.0.0/8")
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<TunnelNetwork>(),
            Err(NetworkError::PrefixLength(33))
        ));
        assert!(matches!(
            "10.0.0.0".parse::<TunnelNetwork>(),
            Err(NetworkError::Syntax(_))
        ));
    }
}
