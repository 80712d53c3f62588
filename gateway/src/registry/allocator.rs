//! Tunnel address allocation: one stable address per instance from the tunnel network.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::config::TunnelNetwork;

/// Hands out free host addresses of the tunnel network, never the gateway's own.
///
/// Allocation walks forward from the last address handed out (wrapping around), so a freed address is not reused
/// at once and a new instance does not inherit the address a departed one had a moment ago.
#[derive(Debug, Clone)]
pub struct AddressAllocator {
    network: TunnelNetwork,
    gateway: u32,
    used: BTreeSet<u32>,
    cursor: u32,
}

impl AddressAllocator {
    /// An allocator for `network` that never hands out `gateway`.
    pub fn new(network: TunnelNetwork, gateway: Ipv4Addr) -> Self {
        let (first, _) = network.host_range();
        Self {
            network,
            gateway: u32::from(gateway),
            used: BTreeSet::new(),
            cursor: first,
        }
    }

    /// Marks an address as taken (when restoring the registry). Returns false if it is outside the network, the
    /// gateway's, or already taken.
    pub fn reserve(&mut self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        if self.network.check_host(addr).is_err() || a == self.gateway {
            return false;
        }
        let fresh = self.used.insert(a);
        if fresh && a >= self.cursor {
            self.cursor = a.saturating_add(1);
        }
        fresh
    }

    /// The next free address, now marked as taken; `None` if the network is full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let (first, last) = self.network.host_range();
        let capacity = u64::from(last - first) + 1
            - u64::from(self.network.contains(Ipv4Addr::from(self.gateway)));
        if self.used.len() as u64 >= capacity {
            return None;
        }
        let mut candidate = if self.cursor < first || self.cursor > last {
            first
        } else {
            self.cursor
        };
        loop {
            if candidate != self.gateway && !self.used.contains(&candidate) {
                self.used.insert(candidate);
                self.cursor = if candidate == last {
                    first
                } else {
                    candidate + 1
                };
                return Some(Ipv4Addr::from(candidate));
            }
            candidate = if candidate == last {
                first
            } else {
                candidate + 1
            };
        }
    }

    /// Frees an address.
    pub fn release(&mut self, addr: Ipv4Addr) {
        self.used.remove(&u32::from(addr));
    }

    /// How many addresses are taken.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_gateway_and_wraps_without_reusing_at_once() {
        let net: TunnelNetwork = "10.9.0.0/29".parse().unwrap(); // hosts .1 .. .6
        let mut a = AddressAllocator::new(net, Ipv4Addr::new(10, 9, 0, 1));
        let got: Vec<_> = (0..5).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 9, 0, 6)));
        assert_eq!(a.allocate(), None, "network full");
        a.release(Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 9, 0, 3)));
        assert_eq!(a.in_use(), 5);
    }

    #[test]
    fn reserve_refuses_gateway_outsiders_and_duplicates() {
        let net: TunnelNetwork = "10.0.0.0/8".parse().unwrap();
        let mut a = AddressAllocator::new(net, Ipv4Addr::new(10, 0, 0, 1));
        assert!(!a.reserve(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!a.reserve(Ipv4Addr::new(192, 168, 0, 1)));
        assert!(!a.reserve(Ipv4Addr::new(10, 0, 0, 0)));
        assert!(a.reserve(Ipv4Addr::new(10, 0, 0, 7)));
        assert!(!a.reserve(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 0, 0, 8)));
    }
}
