//! Just enough of IPv4, TCP and ICMP for routing, the isolation checks, the inbound filter and the offloads:
//! field constants and a few bounds-checked reads, shared by every module that looks into a packet.

use std::net::Ipv4Addr;

/// IPv4 protocol number of ICMP.
pub(crate) const PROTO_ICMP: u8 = 1;
/// IPv4 protocol number of TCP.
pub(crate) const PROTO_TCP: u8 = 6;
/// Length of an IPv4 header without options.
pub(crate) const IP_HDR: usize = 20;
/// Length of a TCP header without options.
pub(crate) const TCP_HDR: usize = 20;
/// IPv4 "more fragments" flag and fragment offset, within the flags/offset field.
pub(crate) const IP_MF_OFFSET: u16 = 0x3fff;
/// IPv4 "don't fragment" flag.
pub(crate) const IP_DF: u16 = 0x4000;
/// TCP flags.
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_ACK: u8 = 0x10;

/// Source and destination of an IPv4 packet, or None if `packet` is not a plausible IPv4 packet.
pub(crate) fn ipv4_addrs(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.len() < IP_HDR || packet[0] >> 4 != 4 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((src, dst))
}

/// The IPv4 header length (options included), if the packet is long enough to hold it.
pub(crate) fn header_len(packet: &[u8]) -> Option<usize> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    (ihl >= IP_HDR && packet.len() >= ihl).then_some(ihl)
}

/// Whether an IPv4 packet (at least a header long) is a fragment: "more fragments" set or a non-zero offset.
pub(crate) fn is_fragment(packet: &[u8]) -> bool {
    u16::from_be_bytes([packet[6], packet[7]]) & IP_MF_OFFSET != 0
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

    #[test]
    fn header_length_must_fit() {
        assert_eq!(header_len(&[0x45; 20]), Some(20));
        assert_eq!(header_len(&[0x46; 24]), Some(24));
        assert_eq!(header_len(&[0x46; 23]), None);
        assert_eq!(header_len(&[0x44; 40]), None);
        assert_eq!(header_len(&[]), None);
    }
}
