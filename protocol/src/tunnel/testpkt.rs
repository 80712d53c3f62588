//! Packets for the tests of the modules that parse them: one IPv4 TCP segment builder with defaults, and a
//! checksum check. Checksums are left zero unless a test fills them in.

use std::net::Ipv4Addr;

use super::ip::{IP_DF, IP_HDR, PROTO_TCP, TCP_HDR};
use super::offload::{fold, pseudo_header_sum, sum_words};

/// An IPv4 TCP segment; [`Segment::build`] lays it out.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// IPv4 source and destination.
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    /// TCP source and destination ports.
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    /// TCP sequence and acknowledgment numbers, flags and window.
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) window: u16,
    /// IPv4 identification.
    pub(crate) ip_id: u16,
    /// The "don't fragment" flag.
    pub(crate) df: bool,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub(crate) ip_options: Vec<u8>,
    /// TCP options (a multiple of 4 bytes, at most 40).
    pub(crate) tcp_options: Vec<u8>,
    /// What the segment carries.
    pub(crate) payload: Vec<u8>,
}

impl Default for Segment {
    /// 10.0.0.2:40000 to 10.0.0.1:5201, DF, TTL 64, no options, no payload, no flags.
    fn default() -> Self {
        Segment {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            src_port: 40000,
            dst_port: 5201,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 0,
            ip_id: 0,
            df: true,
            ip_options: Vec::new(),
            tcp_options: Vec::new(),
            payload: Vec::new(),
        }
    }
}

impl Segment {
    /// The packet's bytes, checksums zero.
    pub(crate) fn build(&self) -> Vec<u8> {
        let ihl = IP_HDR + self.ip_options.len();
        let thl = TCP_HDR + self.tcp_options.len();
        let mut p = vec![0u8; ihl + thl];
        p[0] = 0x40 | (ihl / 4) as u8;
        p[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        if self.df {
            p[6..8].copy_from_slice(&IP_DF.to_be_bytes());
        }
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        p[IP_HDR..ihl].copy_from_slice(&self.ip_options);
        let t = &mut p[ihl..];
        t[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        t[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((thl / 4) as u8) << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
        t[TCP_HDR..].copy_from_slice(&self.tcp_options);
        p.extend_from_slice(&self.payload);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }
}

/// Whether an IPv4 TCP packet's TCP checksum is right.
pub(crate) fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let tcp = &packet[ihl..];
    fold(sum_words(
        pseudo_header_sum(src, dst, PROTO_TCP, tcp.len()),
        tcp,
    )) == 0xffff
}

/// Whether an IPv4 TCP packet's header and TCP checksums are right.
pub(crate) fn checksums_ok(packet: &[u8]) -> bool {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    fold(sum_words(0, &packet[..ihl])) == 0xffff && tcp_checksum_ok(packet)
}
