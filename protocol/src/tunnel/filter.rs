//! The inbound filter: which packets from the tunnel may reach this endpoint's TUN device.
//!
//! An endpoint that serves a fixed set of TCP ports (the agent: its declared ports) passes only TCP segments to
//! those ports and, if allowed, ICMP echo. A TCP SYN to any other port is answered by the endpoint itself with
//! a TCP reset, so the sender sees "connection refused" at once, exactly as if no process listened there; every
//! other refused packet is dropped and counted. This keeps services of the host that listen on a wildcard
//! address (`0.0.0.0`) out of reach of the tunnel.
//!
//! The check is stateless and costs a few loads per packet: the ports are a bitmap, nothing is allocated. Being
//! stateless, it suits an endpoint that only serves: answers to connections it opened through the tunnel would be
//! dropped too. An endpoint without a filter delivers every packet that passes the isolation checks.
//!
//! An endpoint that only opens connections through the tunnel and serves nothing there (the gateway: it connects
//! to the CVMs' forwarded ports, and no CVM has any business connecting to it) uses
//! [`InboundFilter::replies_only`]: TCP segments only to the local ports the endpoint's connections come from (the
//! kernel's ephemeral range, where none of the gateway's listeners are), and of those never a connection attempt
//! (a SYN without ACK), which is dropped without an answer; ICMP echo replies (the gateway may ping a CVM) and
//! destination-unreachable errors (about a connection it opened); nothing else (no UDP, no echo requests). A peer
//! can therefore not open a connection to any service of the gateway's host, nor complete one by guessing a SYN
//! cookie for a listener: those listen outside the ephemeral range. What remains is what the peer could do anyway
//! on a connection the gateway opened to it: answer, reset or close it.

use super::ip::{
    header_len, ipv4_addrs, is_fragment, IP_DF, PROTO_ICMP, PROTO_TCP, TCP_ACK, TCP_FIN, TCP_HDR,
    TCP_RST, TCP_SYN,
};
use super::offload::{fold, pseudo_header_sum, sum_words};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;

/// Length of the reset the endpoint crafts: an IPv4 header and a TCP header, neither with options.
pub(crate) const RESET_LEN: usize = 40;

/// What the endpoint lets in from the tunnel (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct InboundFilter {
    /// One bit per TCP port: the ports served, or (replies only) the local ports of connections opened.
    tcp_ports: Box<[u64; 1024]>,
    icmp_echo: bool,
    /// Only answers to connections this endpoint opened (see [`InboundFilter::replies_only`]).
    replies_only: bool,
}

impl std::fmt::Debug for InboundFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundFilter")
            .field("tcp_ports", &self.port_ranges())
            .field("icmp_echo", &self.icmp_echo)
            .field("replies_only", &self.replies_only)
            .finish()
    }
}

impl InboundFilter {
    /// A filter that passes TCP to `tcp_ports` and, when `icmp_echo` is set, ICMP echo requests and replies.
    pub fn new(tcp_ports: impl IntoIterator<Item = u16>, icmp_echo: bool) -> Self {
        let mut bits = Box::new([0u64; 1024]);
        for p in tcp_ports {
            bits[usize::from(p / 64)] |= 1 << (p % 64);
        }
        InboundFilter {
            tcp_ports: bits,
            icmp_echo,
            replies_only: false,
        }
    }

    /// A filter for an endpoint that serves nothing through the tunnel and only opens connections through it,
    /// from local ports in `local_ports` (on Linux, `net.ipv4.ip_local_port_range`); see the module
    /// documentation.
    pub fn replies_only(local_ports: std::ops::RangeInclusive<u16>) -> Self {
        InboundFilter {
            replies_only: true,
            ..Self::new(local_ports, false)
        }
    }

    /// Whether this filter lets in only answers to connections the endpoint opened.
    pub fn is_replies_only(&self) -> bool {
        self.replies_only
    }

    /// The TCP ports let in, as inclusive ranges in increasing order.
    pub fn port_ranges(&self) -> Vec<std::ops::RangeInclusive<u16>> {
        let mut ranges: Vec<std::ops::RangeInclusive<u16>> = Vec::new();
        for p in self.tcp_ports() {
            match ranges.last_mut() {
                Some(r) if u32::from(*r.end()) + 1 == u32::from(p) => *r = *r.start()..=p,
                _ => ranges.push(p..=p),
            }
        }
        ranges
    }

    /// The TCP ports let in, in increasing order.
    pub fn tcp_ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.allows_tcp(*p))
    }

    /// Whether ICMP echo requests and replies are let in (false for a replies-only filter, which lets in echo
    /// replies, and never requests).
    pub fn icmp_echo(&self) -> bool {
        self.icmp_echo
    }

    fn allows_tcp(&self, port: u16) -> bool {
        self.tcp_ports[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    /// The verdict for one IPv4 packet from the tunnel (already checked to be IPv4, from the peer, to us).
    pub(crate) fn check(&self, packet: &[u8]) -> Verdict {
        let Some(ihl) = header_len(packet) else {
            return Verdict::Drop;
        };
        // Fragments carry no complete transport header to judge (TCP through the tunnel never fragments: the
        // MTU is known on both sides and DF is set).
        if is_fragment(packet) {
            return Verdict::Drop;
        }
        let transport = &packet[ihl..];
        if self.replies_only {
            return self.check_reply(packet[9], transport);
        }
        match packet[9] {
            PROTO_TCP if transport.len() >= TCP_HDR => {
                let dst_port = u16::from_be_bytes([transport[2], transport[3]]);
                if self.allows_tcp(dst_port) {
                    return Verdict::Pass;
                }
                let flags = transport[13];
                if flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
                    Verdict::Reset
                } else {
                    Verdict::Drop
                }
            }
            PROTO_ICMP
                if self.icmp_echo
                    && matches!(
                        transport.first(),
                        Some(&(ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY))
                    ) =>
            {
                Verdict::Pass
            }
            _ => Verdict::Drop,
        }
    }
}

impl InboundFilter {
    /// The replies-only verdict for the transport header `transport` of protocol `protocol`.
    fn check_reply(&self, protocol: u8, transport: &[u8]) -> Verdict {
        match protocol {
            PROTO_TCP if transport.len() >= TCP_HDR => {
                let dst_port = u16::from_be_bytes([transport[2], transport[3]]);
                let flags = transport[13];
                let attempt = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
                if self.allows_tcp(dst_port) && !attempt {
                    Verdict::Pass
                } else {
                    Verdict::Drop
                }
            }
            PROTO_ICMP
                if matches!(
                    transport.first(),
                    Some(&(ICMP_ECHO_REPLY | ICMP_DEST_UNREACHABLE))
                ) =>
            {
                Verdict::Pass
            }
            _ => Verdict::Drop,
        }
    }
}

/// What happens to a packet from the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Deliver it.
    Pass,
    /// A connection attempt to a port that is not let in: answer with [`reset_for`].
    Reset,
    /// Drop it (and count it).
    Drop,
}

/// The TCP reset (RST+ACK) that refuses the connection attempt `syn` (a packet for which
/// [`InboundFilter::check`] said [`Verdict::Reset`]), addressed back to its sender. None if `syn` is not a
/// complete IPv4 TCP segment.
pub(crate) fn reset_for(syn: &[u8]) -> Option<[u8; RESET_LEN]> {
    let ihl = header_len(syn)?;
    if syn[9] != PROTO_TCP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([syn[2], syn[3]])).min(syn.len());
    let tcp = syn.get(ihl..total)?;
    if tcp.len() < TCP_HDR {
        return None;
    }
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if data_offset < TCP_HDR || data_offset > tcp.len() {
        return None;
    }
    let (src, dst) = ipv4_addrs(syn)?;
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    // The reset acknowledges everything the segment occupied: SYN, any data, FIN.
    let occupied = (tcp.len() - data_offset) as u32 + 1 + u32::from(tcp[13] & TCP_FIN != 0);

    let mut out = [0u8; RESET_LEN];
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(RESET_LEN as u16).to_be_bytes());
    out[6..8].copy_from_slice(&IP_DF.to_be_bytes());
    out[8] = 64;
    out[9] = PROTO_TCP;
    out[12..16].copy_from_slice(&dst.octets());
    out[16..20].copy_from_slice(&src.octets());
    let ip_sum = !fold(sum_words(0, &out[..20]));
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let t = &mut out[20..];
    t[0..2].copy_from_slice(&tcp[2..4]);
    t[2..4].copy_from_slice(&tcp[0..2]);
    // Sequence number 0: the SYN carried no acknowledgment to take it from (RFC 9293, 3.5.2).
    t[8..12].copy_from_slice(&seq.wrapping_add(occupied).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = TCP_RST | TCP_ACK;
    let sum = !fold(sum_words(
        pseudo_header_sum(dst, src, PROTO_TCP, 20),
        &out[20..],
    ));
    out[36..38].copy_from_slice(&sum.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::testpkt::{checksums_ok, Segment};
    use std::net::Ipv4Addr;

    fn tcp(dst_port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        Segment {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 51000,
            dst_port,
            seq: 0xffff_fffe,
            flags,
            tcp_options: vec![2, 4, 0x05, 0x8c], // MSS
            payload: payload.to_vec(),
            ..Segment::default()
        }
        .build()
    }

    fn icmp(kind: u8) -> Vec<u8> {
        let mut p = tcp(0, 0, &[]);
        p[9] = PROTO_ICMP;
        p[20] = kind;
        p
    }

    #[test]
    fn declared_ports_pass_and_syns_elsewhere_are_reset() {
        let f = InboundFilter::new([80, 443, 65535], true);
        assert_eq!(f.tcp_ports().collect::<Vec<_>>(), [80, 443, 65535]);
        for port in [80, 443, 65535] {
            assert_eq!(f.check(&tcp(port, TCP_SYN, &[])), Verdict::Pass);
            assert_eq!(f.check(&tcp(port, TCP_ACK, b"data")), Verdict::Pass);
        }
        for port in [0, 22, 81, 442, 8080, 65534] {
            assert_eq!(f.check(&tcp(port, TCP_SYN, &[])), Verdict::Reset, "{port}");
            // Anything but a bare SYN is dropped: no answer to resets, to stray ACKs, or to SYN+ACK.
            for flags in [
                TCP_ACK,
                TCP_RST,
                TCP_RST | TCP_ACK,
                TCP_SYN | TCP_ACK,
                TCP_SYN | TCP_RST,
            ] {
                assert_eq!(
                    f.check(&tcp(port, flags, &[])),
                    Verdict::Drop,
                    "{port} {flags:#x}"
                );
            }
        }
        let none = InboundFilter::new([], false);
        assert_eq!(none.tcp_ports().count(), 0);
        assert_eq!(none.check(&tcp(80, TCP_SYN, &[])), Verdict::Reset);
    }

    #[test]
    fn icmp_echo_only_when_allowed_and_other_protocols_dropped() {
        let with = InboundFilter::new([80], true);
        let without = InboundFilter::new([80], false);
        for kind in [ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY] {
            assert_eq!(with.check(&icmp(kind)), Verdict::Pass);
            assert_eq!(without.check(&icmp(kind)), Verdict::Drop);
        }
        // Destination unreachable, redirect, timestamp.
        for kind in [3, 5, 13] {
            assert_eq!(with.check(&icmp(kind)), Verdict::Drop);
        }
        let mut udp = tcp(80, 0, &[]);
        udp[9] = 17;
        assert_eq!(with.check(&udp), Verdict::Drop);
        let mut gre = tcp(80, 0, &[]);
        gre[9] = 47;
        assert_eq!(with.check(&gre), Verdict::Drop);
    }

    #[test]
    fn fragments_and_truncated_packets_are_dropped() {
        let f = InboundFilter::new([80], true);
        let mut first = tcp(80, TCP_SYN, &[]);
        first[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
        assert_eq!(f.check(&first), Verdict::Drop);
        let mut later = tcp(80, TCP_SYN, &[]);
        later[6..8].copy_from_slice(&0x0010u16.to_be_bytes()); // offset 128
        assert_eq!(f.check(&later), Verdict::Drop);
        let full = tcp(80, TCP_SYN, &[]);
        assert_eq!(f.check(&full[..39]), Verdict::Drop);
        assert_eq!(f.check(&full[..19]), Verdict::Drop);
        let mut bad_ihl = full.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(f.check(&bad_ihl), Verdict::Drop);
        let mut long_ihl = full;
        long_ihl[0] = 0x4f; // a 60-byte header in a 44-byte packet
        assert_eq!(f.check(&long_ihl), Verdict::Drop);
    }

    #[test]
    fn reset_answers_the_syn() {
        let syn = tcp(7001, TCP_SYN, &[]);
        let rst = reset_for(&syn).unwrap();
        assert!(checksums_ok(&rst));
        assert_eq!(rst[0], 0x45);
        assert_eq!(u16::from_be_bytes([rst[2], rst[3]]), 40);
        assert_eq!(rst[9], PROTO_TCP);
        assert_eq!(&rst[12..16], &[10, 0, 0, 2], "from the SYN's destination");
        assert_eq!(&rst[16..20], &[10, 0, 0, 1], "to the SYN's source");
        assert_eq!(u16::from_be_bytes([rst[20], rst[21]]), 7001);
        assert_eq!(u16::from_be_bytes([rst[22], rst[23]]), 51000);
        assert_eq!(&rst[24..28], &[0; 4], "sequence number 0");
        // The SYN's sequence number was 2^32 - 2: the acknowledgment wraps.
        assert_eq!(
            u32::from_be_bytes([rst[28], rst[29], rst[30], rst[31]]),
            0xffff_ffff
        );
        assert_eq!(rst[32], 5 << 4);
        assert_eq!(rst[33], TCP_RST | TCP_ACK);

        // A SYN with data (TCP Fast Open) and FIN: the acknowledgment covers all of it.
        let rst = reset_for(&tcp(7001, TCP_SYN | TCP_FIN, b"hello")).unwrap();
        assert!(checksums_ok(&rst));
        assert_eq!(
            u32::from_be_bytes([rst[28], rst[29], rst[30], rst[31]]),
            0xffff_fffeu32.wrapping_add(5 + 2)
        );

        // Nothing to answer for what is not a complete TCP segment.
        assert_eq!(reset_for(&icmp(ICMP_ECHO_REQUEST)), None);
        let syn = tcp(7001, TCP_SYN, &[]);
        assert_eq!(reset_for(&syn[..30]), None);
        let mut bad_offset = syn.clone();
        bad_offset[32] = 15 << 4;
        assert_eq!(reset_for(&bad_offset), None);
        bad_offset[32] = 4 << 4;
        assert_eq!(reset_for(&bad_offset), None);
    }
}
