//! Just enough of the IPv4 header for routing and the isolation checks.

use std::net::Ipv4Addr;

/// Source and destination of an IPv4 packet, or None if `packet` is not a plausible IPv4 packet.
pub(crate) fn ipv4_addrs(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((src, dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_and_refuses_non_ipv4() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[10, 0, 0, 2]);
        p[16..20].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(
            ipv4_addrs(&p),
            Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)))
        );
        p[0] = 0x60;
        assert_eq!(ipv4_addrs(&p), None);
        assert_eq!(ipv4_addrs(&[0x45; 19]), None);
    }
}
