//! The tunnel's routing decisions, without I/O: which peer a datagram from the network belongs to, whether a
//! packet a peer's session decrypted may reach the TUN device, the reset that refuses a connection attempt,
//! when a peer's network endpoint follows its datagrams, and which peer a packet from the TUN device is for.
//!
//! These functions read only their arguments (no sockets, threads, clock or locks), so every rule is tested
//! here without root. The endpoint (`endpoint`) does the I/O around them: it runs boringtun's `Tunn`, looks
//! peers up in its table, counts each decision and writes or sends what they say.
//!
//! The isolation rule: a decrypted packet is delivered only if it is IPv4, comes from the sending peer's own
//! tunnel address and is addressed to this endpoint's address. The endpoint never forwards from one peer to
//! another: a packet for any other address (another CVM's, for example) is dropped, whatever its source.

use std::net::{Ipv4Addr, SocketAddr};

use super::filter::{reset_for, InboundFilter, Verdict, RESET_LEN};
use super::ip::ipv4_addrs;
use super::stats::PeerDrop;

/// WireGuard's handshake initiation message type.
const HANDSHAKE_INITIATION: u32 = 1;
/// WireGuard's handshake response message type.
const HANDSHAKE_RESPONSE: u32 = 2;
/// WireGuard's cookie reply message type.
pub(crate) const COOKIE_REPLY: u32 = 3;
/// WireGuard's transport data message type.
pub(crate) const DATA_MESSAGE: u32 = 4;
/// Bytes a data message adds to the packet it carries (header and authentication tag).
pub(crate) const DATA_OVERHEAD: usize = 32;

/// The message type of a WireGuard datagram: its first four bytes, little-endian (the type and three
/// reserved zero bytes), or None if it is shorter than that.
pub(crate) fn message_type(datagram: &[u8]) -> Option<u32> {
    let head: [u8; 4] = datagram.get(0..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(head))
}

/// How to find the peer a datagram from the network belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A handshake initiation: the sender's static key is inside, encrypted; once the rate limiter and the
    /// anonymous handshake parse let it through, the peer is found by that key.
    Initiation,
    /// A handshake response, cookie reply or data message: the peer is found by the receiver index it names
    /// (an index this endpoint handed out).
    ReceiverIndex(u32),
    /// Not a WireGuard message, or cut short before its receiver index: dropped and counted as malformed.
    Malformed,
}

/// Which lookup a datagram from the network needs.
pub(crate) fn lookup(datagram: &[u8]) -> Lookup {
    let at = match message_type(datagram) {
        Some(HANDSHAKE_INITIATION) => return Lookup::Initiation,
        // A response carries the sender's index first, then ours.
        Some(HANDSHAKE_RESPONSE) => 8,
        Some(COOKIE_REPLY | DATA_MESSAGE) => 4,
        _ => return Lookup::Malformed,
    };
    match datagram.get(at..at + 4) {
        Some(&[a, b, c, d]) => Lookup::ReceiverIndex(u32::from_le_bytes([a, b, c, d])),
        _ => Lookup::Malformed,
    }
}

/// What to do with a packet a peer's session decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Write it to the TUN device.
    Deliver,
    /// Drop it and count it for the peer under this reason.
    Drop(PeerDrop),
    /// A connection attempt to a port the filter does not let in: drop it, count it as
    /// [`PeerDrop::Refused`], and send this reset back through the session it came in on.
    Reset([u8; RESET_LEN]),
}

impl Inbound {
    /// The reason the packet counts as dropped, if it does.
    pub(crate) fn drop_reason(&self) -> Option<PeerDrop> {
        match self {
            Inbound::Deliver => None,
            Inbound::Drop(reason) => Some(*reason),
            Inbound::Reset(_) => Some(PeerDrop::Refused),
        }
    }
}

/// The isolation rule, then the inbound filter (None: let in whatever passes the rule), for a `packet` the
/// session of the peer whose tunnel address is `peer_addr` decrypted, at the endpoint whose tunnel address
/// is `own_addr`.
pub(crate) fn inbound(
    packet: &[u8],
    peer_addr: Ipv4Addr,
    own_addr: Ipv4Addr,
    filter: Option<&InboundFilter>,
) -> Inbound {
    let Some((src, dst)) = ipv4_addrs(packet) else {
        return Inbound::Drop(PeerDrop::NotIpv4);
    };
    if src != peer_addr {
        return Inbound::Drop(PeerDrop::SpoofedSource);
    }
    if dst != own_addr {
        return Inbound::Drop(PeerDrop::WrongDestination);
    }
    match filter.map_or(Verdict::Pass, |f| f.check(packet)) {
        Verdict::Pass => Inbound::Deliver,
        Verdict::Drop => Inbound::Drop(PeerDrop::Filtered),
        // A segment whose IPv4 total length cuts off its TCP header gets no answer, but counts as refused.
        Verdict::Reset => {
            reset_for(packet).map_or(Inbound::Drop(PeerDrop::Refused), Inbound::Reset)
        }
    }
}

/// The peer's network endpoint after a datagram from `from`, when its session `accepted` the datagram
/// (authenticated it, and did not answer with a cookie challenge): None leaves the endpoint as it is.
///
/// WireGuard's roaming: a peer is followed to wherever its authenticated datagrams come from. A cookie
/// reply is not authenticated under the peer's key, so it never moves the peer.
pub(crate) fn roam(datagram: &[u8], accepted: bool, from: SocketAddr) -> Option<SocketAddr> {
    (accepted && message_type(datagram) != Some(COOKIE_REPLY)).then_some(from)
}

/// The tunnel address a packet from the TUN device goes to, or None if it is not IPv4 (IPv6 router
/// solicitations and the like: the tunnel carries IPv4 only) and so has no route.
pub(crate) fn outbound(packet: &[u8]) -> Option<Ipv4Addr> {
    ipv4_addrs(packet).map(|(_, dst)| dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::ip::{
        IP_DF, IP_HDR, PROTO_ICMP, PROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
    };
    use crate::tunnel::testpkt::{checksums_ok, Segment};
    use proptest::prelude::*;

    const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const CVM_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const CVM_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const FROM: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 51820);

    /// A segment from CVM A to the gateway's port `dst_port`.
    fn from_a(dst_port: u16, flags: u8) -> Segment {
        Segment {
            src: CVM_A,
            dst: GATEWAY,
            dst_port,
            seq: 1000,
            flags,
            ..Segment::default()
        }
    }

    /// A packet from CVM A laid out as [`from_a`]'s segment, its IP protocol field set to `proto`.
    fn proto_from_a(proto: u8, dst_port: u16, flags: u8) -> Vec<u8> {
        let mut p = from_a(dst_port, flags).build();
        p[9] = proto;
        p
    }

    /// An ICMP message of type `kind` from CVM A to the gateway.
    fn icmp_from_a(kind: u8) -> Vec<u8> {
        let mut p = proto_from_a(PROTO_ICMP, 0, 0);
        p[IP_HDR] = kind;
        p
    }

    /// A segment to `dst_port` from CVM A's peer that claims CVM B's address.
    fn spoofed_by_a(dst_port: u16, flags: u8) -> Vec<u8> {
        Segment {
            src: CVM_B,
            ..from_a(dst_port, flags)
        }
        .build()
    }

    /// Checks that `check` delivers the ICMP types marked allowed in `cases` and filters the others.
    fn assert_icmp(check: impl Fn(&[u8]) -> Inbound, cases: &[(u8, bool)]) {
        for &(kind, allowed) in cases {
            let expected = if allowed {
                Inbound::Deliver
            } else {
                Inbound::Drop(PeerDrop::Filtered)
            };
            assert_eq!(check(&icmp_from_a(kind)), expected, "ICMP type {kind}");
        }
    }

    fn datagram(ty: u8, len: usize) -> Vec<u8> {
        let mut d: Vec<u8> = (0..len).map(|i| i as u8).collect();
        if let Some(b) = d.first_mut() {
            *b = ty;
        }
        d[1..4.min(len)].fill(0);
        d
    }

    #[test]
    fn each_message_type_finds_its_peer_its_own_way() {
        assert_eq!(lookup(&datagram(1, 148)), Lookup::Initiation);
        // Response: sender index at 4..8, receiver index at 8..12.
        assert_eq!(
            lookup(&datagram(2, 92)),
            Lookup::ReceiverIndex(u32::from_le_bytes([8, 9, 10, 11]))
        );
        for ty in [3, 4] {
            assert_eq!(
                lookup(&datagram(ty, 64)),
                Lookup::ReceiverIndex(u32::from_le_bytes([4, 5, 6, 7]))
            );
        }
        // Unknown types, a non-zero reserved byte, and datagrams cut short are malformed.
        for ty in [0, 5, 255] {
            assert_eq!(lookup(&datagram(ty, 64)), Lookup::Malformed);
        }
        let mut reserved = datagram(4, 64);
        reserved[3] = 1;
        assert_eq!(lookup(&reserved), Lookup::Malformed);
        assert_eq!(lookup(&datagram(2, 11)), Lookup::Malformed);
        assert_eq!(lookup(&datagram(4, 7)), Lookup::Malformed);
        assert_eq!(lookup(&[1, 0, 0]), Lookup::Malformed);
        assert_eq!(lookup(&[]), Lookup::Malformed);
        assert_eq!(message_type(&datagram(4, 8)), Some(DATA_MESSAGE));
    }

    #[test]
    fn only_packets_from_the_peer_to_us_are_delivered() {
        let ok = from_a(80, TCP_ACK).build();
        assert_eq!(inbound(&ok, CVM_A, GATEWAY, None), Inbound::Deliver);
        // A spoofed inner source (another CVM's address, the gateway's own, anything else), and never CVM
        // to CVM: another CVM's address as destination, or anything else not ours.
        let spoofed = [CVM_B, GATEWAY, Ipv4Addr::new(192, 168, 1, 1)].map(|src| {
            (
                Segment {
                    src,
                    ..from_a(80, TCP_ACK)
                },
                PeerDrop::SpoofedSource,
            )
        });
        let elsewhere = [CVM_B, CVM_A, Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::BROADCAST].map(|dst| {
            (
                Segment {
                    dst,
                    ..from_a(80, TCP_ACK)
                },
                PeerDrop::WrongDestination,
            )
        });
        for (seg, reason) in spoofed.into_iter().chain(elsewhere) {
            assert_eq!(
                inbound(&seg.build(), CVM_A, GATEWAY, None),
                Inbound::Drop(reason),
                "{seg:?}"
            );
        }
        // At CVM B, whose one peer is the gateway, CVM A's packet relayed by the gateway is spoofed.
        assert_eq!(
            inbound(
                &Segment {
                    dst: CVM_B,
                    ..from_a(80, TCP_ACK)
                }
                .build(),
                GATEWAY,
                CVM_B,
                None
            ),
            Inbound::Drop(PeerDrop::SpoofedSource)
        );
    }

    #[test]
    fn ipv6_and_truncated_headers_are_not_ipv4() {
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        assert_eq!(
            inbound(&v6, CVM_A, GATEWAY, None),
            Inbound::Drop(PeerDrop::NotIpv4)
        );
        let ok = from_a(80, TCP_ACK).build();
        for len in [0, 1, 19] {
            assert_eq!(
                inbound(&ok[..len], CVM_A, GATEWAY, None),
                Inbound::Drop(PeerDrop::NotIpv4)
            );
        }
        // A whole IPv4 header without a transport header passes the isolation rule, and the filter drops it.
        let filter = InboundFilter::new([80], true);
        assert_eq!(inbound(&ok[..20], CVM_A, GATEWAY, None), Inbound::Deliver);
        assert_eq!(
            inbound(&ok[..20], CVM_A, GATEWAY, Some(&filter)),
            Inbound::Drop(PeerDrop::Filtered)
        );
        assert_eq!(
            inbound(&ok[..39], CVM_A, GATEWAY, Some(&filter)),
            Inbound::Drop(PeerDrop::Filtered)
        );
    }

    #[test]
    fn every_filter_case() {
        let filter = InboundFilter::new([80, 443], true);
        let check = |p: &[u8]| inbound(p, CVM_A, GATEWAY, Some(&filter));
        // Declared ports: every segment passes.
        for flags in [
            TCP_SYN,
            TCP_ACK,
            TCP_ACK | TCP_PSH,
            TCP_RST,
            TCP_FIN | TCP_ACK,
        ] {
            assert_eq!(check(&from_a(443, flags).build()), Inbound::Deliver);
        }
        // Other ports: a bare SYN is reset, anything else dropped.
        assert!(matches!(
            check(&from_a(22, TCP_SYN).build()),
            Inbound::Reset(_)
        ));
        for flags in [TCP_ACK, TCP_RST, TCP_SYN | TCP_ACK, TCP_SYN | TCP_RST, 0] {
            assert_eq!(
                check(&from_a(22, flags).build()),
                Inbound::Drop(PeerDrop::Filtered)
            );
        }
        // ICMP echo request and reply pass only when allowed; other ICMP and other protocols never.
        let icmp = [(8, true), (0, true), (3, false), (5, false), (13, false)];
        assert_icmp(check, &icmp);
        let without_icmp = InboundFilter::new([80, 443], false);
        assert_icmp(
            |p| inbound(p, CVM_A, GATEWAY, Some(&without_icmp)),
            &icmp.map(|(kind, _)| (kind, false)),
        );
        for proto in [17, 47, 50, 132] {
            assert_eq!(
                check(&proto_from_a(proto, 80, TCP_SYN)),
                Inbound::Drop(PeerDrop::Filtered),
                "{proto}"
            );
        }
        // The isolation rule comes first: a spoofed SYN to a closed port is not answered.
        assert_eq!(
            check(&spoofed_by_a(22, TCP_SYN)),
            Inbound::Drop(PeerDrop::SpoofedSource)
        );
        // A SYN whose total length cuts its TCP header off counts as refused, without a reset.
        let mut cut = from_a(22, TCP_SYN).build();
        cut[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(check(&cut), Inbound::Drop(PeerDrop::Refused));
        assert_eq!(
            Inbound::Drop(PeerDrop::Refused).drop_reason(),
            Some(PeerDrop::Refused)
        );
        assert_eq!(
            Inbound::Reset([0; RESET_LEN]).drop_reason(),
            Some(PeerDrop::Refused)
        );
        assert_eq!(Inbound::Deliver.drop_reason(), None);
    }

    #[test]
    fn fragments_pass_the_rule_but_not_the_filter() {
        let filter = InboundFilter::new([80], true);
        for flags_offset in [0x2000u16, 0x0010, 0x2010, 0x1fff] {
            let mut p = from_a(80, TCP_ACK).build();
            p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
            assert_eq!(inbound(&p, CVM_A, GATEWAY, None), Inbound::Deliver);
            assert_eq!(
                inbound(&p, CVM_A, GATEWAY, Some(&filter)),
                Inbound::Drop(PeerDrop::Filtered)
            );
        }
        // DF alone is not a fragment.
        let mut df = from_a(80, TCP_ACK).build();
        df[6..8].copy_from_slice(&IP_DF.to_be_bytes());
        assert_eq!(
            inbound(&df, CVM_A, GATEWAY, Some(&filter)),
            Inbound::Deliver
        );
    }

    #[test]
    fn ip_options_move_the_transport_header() {
        let filter = InboundFilter::new([80], true);
        // Router alert (4 bytes) and a 40-byte run of no-ops.
        for options in [vec![0x94, 4, 0, 0], vec![1; 40]] {
            let with = |port, flags| {
                Segment {
                    ip_options: options.clone(),
                    ..from_a(port, flags)
                }
                .build()
            };
            assert_eq!(
                inbound(&with(80, TCP_SYN), CVM_A, GATEWAY, Some(&filter)),
                Inbound::Deliver
            );
            let Inbound::Reset(rst) = inbound(&with(81, TCP_SYN), CVM_A, GATEWAY, Some(&filter))
            else {
                panic!("a SYN to a closed port behind IP options is reset");
            };
            assert!(checksums_ok(&rst));
            assert_eq!(u16::from_be_bytes([rst[20], rst[21]]), 81);
            assert_eq!(
                u32::from_be_bytes([rst[28], rst[29], rst[30], rst[31]]),
                1001
            );
        }
        // A header length beyond the packet is dropped by the filter.
        let mut long = from_a(80, TCP_SYN).build();
        long[0] = 0x4f;
        long.truncate(50);
        assert_eq!(
            inbound(&long, CVM_A, GATEWAY, Some(&filter)),
            Inbound::Drop(PeerDrop::Filtered)
        );
    }

    #[test]
    fn only_accepted_datagrams_other_than_cookie_replies_move_the_peer() {
        let data = datagram(4, 64);
        assert_eq!(roam(&data, true, FROM), Some(FROM));
        assert_eq!(roam(&datagram(1, 148), true, FROM), Some(FROM));
        assert_eq!(roam(&datagram(2, 92), true, FROM), Some(FROM));
        assert_eq!(roam(&data, false, FROM), None);
        assert_eq!(roam(&datagram(3, 64), true, FROM), None);
        assert_eq!(roam(&datagram(3, 64), false, FROM), None);
    }

    #[test]
    fn outbound_packets_go_to_their_ipv4_destination() {
        assert_eq!(outbound(&from_a(80, TCP_ACK).build()), Some(GATEWAY));
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        assert_eq!(outbound(&v6), None);
        assert_eq!(outbound(&[0x45; 19]), None);
    }

    /// The gateway's filter in these tests: connections it opens come from ports 32768..=60999.
    fn gateway_filter() -> InboundFilter {
        InboundFilter::replies_only(EPHEMERAL)
    }

    const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

    #[test]
    fn at_the_gateway_a_cvm_can_answer_but_not_connect() {
        let filter = gateway_filter();
        let check = |p: &[u8]| inbound(p, CVM_A, GATEWAY, Some(&filter));
        // Answers on a connection the gateway opened from an ephemeral port: SYN+ACK, data, FIN, RST.
        for flags in [
            TCP_SYN | TCP_ACK,
            TCP_ACK,
            TCP_ACK | TCP_PSH,
            TCP_FIN | TCP_ACK,
            TCP_RST,
            TCP_RST | TCP_ACK,
        ] {
            for port in [32768, 45000, 60999] {
                assert_eq!(
                    check(&from_a(port, flags).build()),
                    Inbound::Deliver,
                    "{port} {flags:#x}"
                );
            }
        }
        // A connection attempt is dropped, unanswered, whatever the port: the control (8443), client (443),
        // admin (9443) listeners, SSH, and even an ephemeral port.
        for port in [22, 443, 8443, 9443, 51820, 32768, 45000, 60999] {
            for flags in [
                TCP_SYN,
                TCP_SYN | TCP_FIN,
                TCP_SYN | TCP_PSH,
                TCP_SYN | TCP_RST,
            ] {
                assert_eq!(
                    check(&from_a(port, flags).build()),
                    Inbound::Drop(PeerDrop::Filtered),
                    "{port} {flags:#x}"
                );
            }
        }
        // Outside the ephemeral range nothing TCP passes, so no ACK can complete a SYN-cookie handshake with
        // a listener, and no stray segment reaches it.
        for port in [22, 443, 8443, 9443, 32767, 61000] {
            for flags in [TCP_ACK, TCP_ACK | TCP_PSH, TCP_RST, TCP_SYN | TCP_ACK] {
                assert_eq!(
                    check(&from_a(port, flags).build()),
                    Inbound::Drop(PeerDrop::Filtered),
                    "{port} {flags:#x}"
                );
            }
        }
        // ICMP: echo replies (the gateway pings CVMs) and destination-unreachable only; no echo requests.
        assert_icmp(
            check,
            &[
                (0, true),
                (3, true),
                (8, false),
                (5, false),
                (11, false),
                (13, false),
            ],
        );
        // UDP (DNS, WireGuard, anything) and every other protocol: dropped, also to an ephemeral port.
        for proto in [17, 47, 50, 132, 136] {
            for port in [53, 51820, 45000] {
                assert_eq!(
                    check(&proto_from_a(proto, port, TCP_ACK)),
                    Inbound::Drop(PeerDrop::Filtered),
                    "{proto}"
                );
            }
        }
        // The isolation rule still comes first.
        assert_eq!(
            check(&spoofed_by_a(45000, TCP_ACK)),
            Inbound::Drop(PeerDrop::SpoofedSource)
        );
        assert!(filter.is_replies_only() && !filter.icmp_echo());
        assert_eq!(filter.port_ranges(), vec![EPHEMERAL]);
    }

    fn addr() -> impl Strategy<Value = Ipv4Addr> {
        prop_oneof![
            Just(GATEWAY),
            Just(CVM_A),
            Just(CVM_B),
            any::<u32>().prop_map(Ipv4Addr::from),
        ]
    }

    fn options() -> impl Strategy<Value = Vec<u8>> {
        (0usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4))
    }

    fn segment() -> impl Strategy<Value = Segment> {
        (
            (
                addr(),
                addr(),
                any::<u16>(),
                prop_oneof![Just(22u16), Just(80), any::<u16>()],
            ),
            (any::<u32>(), any::<u8>(), any::<bool>()),
            (
                options(),
                options(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
        )
            .prop_map(
                |(
                    (src, dst, src_port, dst_port),
                    (seq, flags, df),
                    (ip_options, tcp_options, payload),
                )| {
                    Segment {
                        src,
                        dst,
                        src_port,
                        dst_port,
                        seq,
                        flags,
                        df,
                        ip_options,
                        tcp_options,
                        payload,
                        ..Segment::default()
                    }
                },
            )
    }

    /// A packet as it may come out of a session: a segment, possibly damaged in its version, protocol,
    /// fragment field or length.
    fn packet() -> impl Strategy<Value = Vec<u8>> {
        (
            segment(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<u8>(),
            any::<usize>(),
        )
            .prop_map(|(seg, version, proto, frag, damage, cut)| {
                let mut p = seg.build();
                if damage & 1 != 0 {
                    p[0] = (version & 0xf0) | (p[0] & 0x0f);
                }
                if damage & 2 != 0 {
                    p[9] = proto;
                }
                if damage & 4 != 0 {
                    p[6..8].copy_from_slice(&frag.to_be_bytes());
                }
                if damage & 8 != 0 {
                    p.truncate(cut % (p.len() + 1));
                }
                p
            })
    }

    fn filter() -> impl Strategy<Value = Option<InboundFilter>> {
        proptest::option::of(
            (
                proptest::collection::vec(prop_oneof![Just(80u16), any::<u16>()], 0..4),
                any::<bool>(),
            )
                .prop_map(|(ports, icmp)| InboundFilter::new(ports, icmp)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever arrives, the decisions do not panic.
        #[test]
        fn any_bytes_get_a_decision(bytes in proptest::collection::vec(any::<u8>(), 0..128), f in filter()) {
            let _ = lookup(&bytes);
            let _ = inbound(&bytes, CVM_A, GATEWAY, f.as_ref());
            let _ = outbound(&bytes);
        }

        /// The isolation rule holds for every packet and filter: nothing is delivered or answered unless it
        /// is IPv4 from the peer's own address to ours, and the filter decides only what passes the rule.
        #[test]
        fn isolation_holds(p in packet(), f in filter()) {
            let decision = inbound(&p, CVM_A, GATEWAY, f.as_ref());
            match ipv4_addrs(&p) {
                None => prop_assert_eq!(decision, Inbound::Drop(PeerDrop::NotIpv4)),
                Some((src, _)) if src != CVM_A => {
                    prop_assert_eq!(decision, Inbound::Drop(PeerDrop::SpoofedSource))
                }
                Some((_, dst)) if dst != GATEWAY => {
                    prop_assert_eq!(decision, Inbound::Drop(PeerDrop::WrongDestination))
                }
                Some(_) => match &f {
                    None => prop_assert_eq!(decision, Inbound::Deliver),
                    Some(filter) => {
                        let expected = match filter.check(&p) {
                            Verdict::Pass => Inbound::Deliver,
                            Verdict::Drop => Inbound::Drop(PeerDrop::Filtered),
                            Verdict::Reset => reset_for(&p)
                                .map_or(Inbound::Drop(PeerDrop::Refused), Inbound::Reset),
                        };
                        prop_assert_eq!(decision, expected);
                    }
                },
            }
        }

        /// A reset goes only to a bare SYN for a TCP port the filter does not let in, and is well formed:
        /// valid checksums, addresses and ports swapped, RST+ACK acknowledging all the SYN occupied.
        #[test]
        fn resets_are_well_formed(seg in segment(), f in filter()) {
            let seg = Segment { src: CVM_A, dst: GATEWAY, ..seg };
            let p = seg.build();
            let Inbound::Reset(rst) = inbound(&p, CVM_A, GATEWAY, f.as_ref()) else {
                return Ok(());
            };
            let filter = f.as_ref().unwrap();
            prop_assert!(!filter.tcp_ports().any(|port| port == seg.dst_port));
            prop_assert_eq!(seg.flags & (TCP_SYN | TCP_ACK | TCP_RST), TCP_SYN);
            prop_assert!(checksums_ok(&rst));
            prop_assert_eq!(rst[0], 0x45);
            prop_assert_eq!(usize::from(u16::from_be_bytes([rst[2], rst[3]])), RESET_LEN);
            prop_assert_eq!(rst[9], PROTO_TCP);
            prop_assert_eq!(ipv4_addrs(&rst), Some((GATEWAY, CVM_A)));
            prop_assert_eq!(u16::from_be_bytes([rst[20], rst[21]]), seg.dst_port);
            prop_assert_eq!(u16::from_be_bytes([rst[22], rst[23]]), seg.src_port);
            prop_assert_eq!(&rst[24..28], &[0u8; 4]);
            let occupied = seg.payload.len() as u32 + 1 + u32::from(seg.flags & TCP_FIN != 0);
            prop_assert_eq!(
                u32::from_be_bytes([rst[28], rst[29], rst[30], rst[31]]),
                seg.seq.wrapping_add(occupied)
            );
            prop_assert_eq!(rst[32], 5 << 4);
            prop_assert_eq!(rst[33], TCP_RST | TCP_ACK);
        }

        /// Every SYN to a closed port, with any options and payload, is answered.
        #[test]
        fn closed_port_syns_are_answered(seg in segment(), fin in any::<bool>()) {
            let flags = TCP_SYN | if fin { TCP_FIN } else { 0 };
            let seg = Segment { src: CVM_A, dst: GATEWAY, dst_port: 22, flags, ..seg };
            let filter = InboundFilter::new([80], false);
            prop_assert!(matches!(inbound(&seg.build(), CVM_A, GATEWAY, Some(&filter)), Inbound::Reset(_)));
        }

        /// At the gateway, whatever a CVM sends: nothing is answered, a connection attempt (SYN without ACK)
        /// is never delivered, no TCP reaches a port outside the ephemeral range, and nothing but TCP and
        /// ICMP echo reply / destination unreachable is delivered.
        #[test]
        fn the_gateway_delivers_only_replies(p in packet(), seg in segment()) {
            let filter = gateway_filter();
            let to_us = Segment { src: CVM_A, dst: GATEWAY, ..seg }.build();
            for p in [p, to_us] {
                let decision = inbound(&p, CVM_A, GATEWAY, Some(&filter));
                prop_assert!(!matches!(decision, Inbound::Reset(_)));
                if decision != Inbound::Deliver {
                    continue;
                }
                let ihl = usize::from(p[0] & 0x0f) * 4;
                match p[9] {
                    PROTO_TCP => {
                        let dst_port = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
                        prop_assert!(EPHEMERAL.contains(&dst_port), "port {}", dst_port);
                        prop_assert!(p[ihl + 13] & (TCP_SYN | TCP_ACK) != TCP_SYN);
                    }
                    PROTO_ICMP => prop_assert!(matches!(p[ihl], 0 | 3)),
                    other => prop_assert!(false, "protocol {} delivered", other),
                }
            }
        }

        /// Every connection attempt from a CVM to the gateway is dropped, to any port, with any options.
        #[test]
        fn no_cvm_connects_to_the_gateway(seg in segment(), port in any::<u16>(), fin in any::<bool>()) {
            let flags = TCP_SYN | if fin { TCP_FIN } else { 0 };
            let syn = Segment { src: CVM_A, dst: GATEWAY, dst_port: port, flags, ..seg }.build();
            prop_assert_eq!(
                inbound(&syn, CVM_A, GATEWAY, Some(&gateway_filter())),
                Inbound::Drop(PeerDrop::Filtered)
            );
        }
    }
}
