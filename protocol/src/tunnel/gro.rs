//! Receive-side coalescing (GRO) for the TUN device: consecutive TCP segments of one flow, decrypted from one
//! batch of datagrams, are merged into one super-segment and written with a `virtio_net_hdr` asking the kernel
//! to treat it as one large packet. One write then replaces many, and the receiving TCP stack works per
//! super-segment, mirroring what TSO does on the sending side (see `offload`).
//!
//! Only plain segments merge: IPv4 without options or fragmentation, TCP with only ACK (and PSH on the last
//! one), identical headers apart from sequence numbers, lengths and checksums, in order, all of one size but the
//! last. Anything else is written as it is, after the segments before it, so order is kept.

use super::ip::{IP_HDR, IP_MF_OFFSET, PROTO_TCP, TCP_ACK, TCP_PSH};
use super::offload::{checksum, F_NEEDS_CSUM, GSO_TCPV4, VNET_HDR_LEN};

/// The largest IP packet the kernel accepts.
const MAX_PACKET: usize = 65_535;

/// Writes one frame to the TUN device: a virtio header, then the packet.
pub(crate) trait FrameSink {
    /// Writes `hdr` followed by `packet` as one frame.
    fn write_frame(&mut self, hdr: &[u8; VNET_HDR_LEN], packet: &[u8]);
}

impl<F: FnMut(&[u8; VNET_HDR_LEN], &[u8])> FrameSink for F {
    fn write_frame(&mut self, hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) {
        self(hdr, packet)
    }
}

const NO_OFFLOAD: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// A segment that may be merged, described by offsets into the packet.
struct Segment {
    tcp_hdr: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

fn mergeable(packet: &[u8]) -> Option<Segment> {
    if packet.len() < IP_HDR + 20 || packet[0] != 0x45 || packet[9] != PROTO_TCP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    // No fragments (MF clear, offset zero; DF may be set).
    if total != packet.len() || u16::from_be_bytes([packet[6], packet[7]]) & IP_MF_OFFSET != 0 {
        return None;
    }
    let tcp_hdr = usize::from(packet[IP_HDR + 12] >> 4) * 4;
    let flags = packet[IP_HDR + 13];
    if tcp_hdr < 20 || packet.len() <= IP_HDR + tcp_hdr || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    let t = &packet[IP_HDR..];
    Some(Segment {
        tcp_hdr,
        payload: packet.len() - IP_HDR - tcp_hdr,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags,
    })
}

/// Merges consecutive TCP segments; call [`Coalescer::flush`] at the end of every receive batch.
pub(crate) struct Coalescer {
    buf: Box<[u8]>,
    /// Bytes of the merged packet in `buf` (0: nothing held).
    len: usize,
    tcp_hdr: usize,
    mss: usize,
    next_seq: u32,
    segments: usize,
    /// No further segment may join (the last one was short or pushed).
    closed: bool,
}

impl Coalescer {
    pub(crate) fn new() -> Coalescer {
        Coalescer {
            buf: vec![0u8; MAX_PACKET].into_boxed_slice(),
            len: 0,
            tcp_hdr: 0,
            mss: 0,
            next_seq: 0,
            segments: 0,
            closed: false,
        }
    }

    /// Whether `packet` (already known mergeable as `seg`) continues the held super-segment.
    fn continues(&self, packet: &[u8], seg: &Segment) -> bool {
        let held = &self.buf[..self.len];
        !self.closed
            && seg.tcp_hdr == self.tcp_hdr
            && seg.seq == self.next_seq
            && seg.payload <= self.mss
            && self.len + seg.payload <= MAX_PACKET
            // IP: version/IHL, TOS, TTL, protocol, addresses; identification, length and checksum vary.
            && packet[..2] == held[..2]
            && packet[8..10] == held[8..10]
            && packet[12..20] == held[12..20]
            // TCP: ports, acknowledgment number, header length and window, options; sequence, flags and
            // checksum vary.
            && packet[IP_HDR..IP_HDR + 4] == held[IP_HDR..IP_HDR + 4]
            && packet[IP_HDR + 8..IP_HDR + 12] == held[IP_HDR + 8..IP_HDR + 12]
            && packet[IP_HDR + 14..IP_HDR + 16] == held[IP_HDR + 14..IP_HDR + 16]
            && packet[IP_HDR + 20..IP_HDR + seg.tcp_hdr] == held[IP_HDR + 20..IP_HDR + self.tcp_hdr]
    }

    /// Takes one decrypted packet that passed the isolation checks.
    pub(crate) fn push(&mut self, packet: &[u8], sink: &mut impl FrameSink) {
        let Some(seg) = mergeable(packet) else {
            self.flush(sink);
            sink.write_frame(&NO_OFFLOAD, packet);
            return;
        };
        if self.len > 0 && self.continues(packet, &seg) {
            let start = IP_HDR + seg.tcp_hdr;
            self.buf[self.len..self.len + seg.payload].copy_from_slice(&packet[start..]);
            self.len += seg.payload;
            self.segments += 1;
            self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
            if seg.flags & TCP_PSH != 0 {
                self.buf[IP_HDR + 13] |= TCP_PSH;
            }
            self.closed = seg.payload < self.mss || seg.flags & TCP_PSH != 0;
            return;
        }
        self.flush(sink);
        self.buf[..packet.len()].copy_from_slice(packet);
        self.len = packet.len();
        self.tcp_hdr = seg.tcp_hdr;
        self.mss = seg.payload;
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        self.segments = 1;
        self.closed = seg.flags & TCP_PSH != 0;
    }

    /// Writes whatever is held.
    pub(crate) fn flush(&mut self, sink: &mut impl FrameSink) {
        if self.len == 0 {
            return;
        }
        let len = std::mem::take(&mut self.len);
        let packet = &mut self.buf[..len];
        if self.segments == 1 {
            // Untouched: its own checksums are still right.
            sink.write_frame(&NO_OFFLOAD, packet);
            return;
        }
        packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        packet[10..12].copy_from_slice(&[0, 0]);
        let ip_sum = checksum(&packet[..IP_HDR]);
        packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // CHECKSUM_PARTIAL: the TCP checksum field holds the pseudo-header sum, the rest is left to the kernel.
        let tcp_len = len - IP_HDR;
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&packet[12..20]);
        pseudo[9] = PROTO_TCP;
        pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        let partial = !checksum(&pseudo);
        packet[IP_HDR + 16..IP_HDR + 18].copy_from_slice(&partial.to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV4;
        hdr[2..4].copy_from_slice(&((IP_HDR + self.tcp_hdr) as u16).to_le_bytes());
        hdr[4..6].copy_from_slice(&(self.mss as u16).to_le_bytes());
        hdr[6..8].copy_from_slice(&(IP_HDR as u16).to_le_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
        sink.write_frame(&hdr, packet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::testpkt::Segment;

    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        Segment {
            seq,
            ack: 77,
            flags,
            window: 500,
            tcp_options: vec![1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7], // timestamps
            payload: payload.to_vec(),
            ..Segment::default()
        }
        .build()
    }

    fn run(packets: &[Vec<u8>]) -> Vec<([u8; VNET_HDR_LEN], Vec<u8>)> {
        let mut out = Vec::new();
        let mut gro = Coalescer::new();
        let mut sink = |h: &[u8; VNET_HDR_LEN], p: &[u8]| out.push((*h, p.to_vec()));
        for p in packets {
            gro.push(p, &mut sink);
        }
        gro.flush(&mut sink);
        out
    }

    #[test]
    fn consecutive_segments_merge_into_one_super_segment() {
        let a = [1u8; 100];
        let b = [2u8; 100];
        let c = [3u8; 40];
        let out = run(&[
            segment(1000, &a, TCP_ACK),
            segment(1100, &b, TCP_ACK),
            segment(1200, &c, TCP_ACK | TCP_PSH),
        ]);
        assert_eq!(out.len(), 1);
        let (hdr, p) = &out[0];
        assert_eq!(hdr[0], F_NEEDS_CSUM);
        assert_eq!(hdr[1], GSO_TCPV4);
        assert_eq!(
            u16::from_le_bytes([hdr[4], hdr[5]]),
            100,
            "gso_size is the segment size"
        );
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(super::checksum(&p[..20]), 0);
        assert_eq!(&p[52..], &[&a[..], &b[..], &c[..]].concat()[..]);
        assert_eq!(p[33], TCP_ACK | TCP_PSH);
        assert_eq!(u32::from_be_bytes([p[24], p[25], p[26], p[27]]), 1000);
    }

    #[test]
    fn gaps_other_flows_and_other_packets_are_not_merged_and_order_is_kept() {
        let d = [9u8; 100];
        // A gap in sequence numbers.
        assert_eq!(
            run(&[segment(0, &d, TCP_ACK), segment(150, &d, TCP_ACK)]).len(),
            2
        );
        // A different acknowledgment number (another packet of the flow changed state).
        let mut other_ack = segment(100, &d, TCP_ACK);
        other_ack[31] = 78;
        assert_eq!(run(&[segment(0, &d, TCP_ACK), other_ack]).len(), 2);
        // Nothing follows a short or pushed segment.
        assert_eq!(
            run(&[segment(0, &d[..50], TCP_ACK), segment(50, &d, TCP_ACK)]).len(),
            2
        );
        assert_eq!(
            run(&[segment(0, &d, TCP_ACK | TCP_PSH), segment(100, &d, TCP_ACK)]).len(),
            2
        );
        // A SYN or FIN is never merged, and is written after what came before it.
        let fin = segment(100, &d, TCP_ACK | 0x01);
        let out = run(&[segment(0, &d, TCP_ACK), fin.clone()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].1, fin);
        assert_eq!(out[1].0, NO_OFFLOAD);
        // A single segment goes out untouched.
        let one = segment(0, &d, TCP_ACK);
        assert_eq!(run(std::slice::from_ref(&one)), vec![(NO_OFFLOAD, one)]);
        // Not TCP: passed through.
        let mut udp = segment(0, &d, TCP_ACK);
        udp[9] = 17;
        assert_eq!(run(std::slice::from_ref(&udp)), vec![(NO_OFFLOAD, udp)]);
    }
}
