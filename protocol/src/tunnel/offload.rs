//! TUN offloads: the kernel hands the endpoint whole TCP super-segments (TSO, up to 64 KiB) with a
//! `virtio_net_hdr` in front, and the endpoint cuts them into MTU-sized packets itself. One read then
//! replaces dozens, and the sender's TCP stack processes one large segment instead of many small ones.
//!
//! Packets written back to the TUN device carry a header too: all-zero for a single packet, or a TCP
//! super-segment description for segments merged by `gro`.

use std::net::Ipv4Addr;

use super::ip::{ipv4_addrs, PROTO_TCP, TCP_FIN, TCP_PSH};

/// Size of `struct virtio_net_hdr` (no `num_buffers`).
pub(crate) const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` is left to the receiver.
pub(crate) const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: a TCP over IPv4 super-segment.
pub(crate) const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

/// Why a packet from the TUN device could not be turned into wire packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffloadError {
    /// The header or packet is truncated or inconsistent.
    Malformed,
    /// A segmentation type this endpoint does not ask for (only TCP over IPv4 is enabled).
    Unsupported,
}

/// The parsed `virtio_net_hdr`.
#[derive(Debug, Clone, Copy)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

fn parse_hdr(b: &[u8]) -> Option<VnetHdr> {
    let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
    // The device speaks the host's byte order (little-endian on every platform this runs on).
    Some(VnetHdr {
        flags: b[0],
        gso_type: b[1],
        gso_size: u16::from_le_bytes([b[4], b[5]]),
        csum_start: u16::from_le_bytes([b[6], b[7]]),
        csum_offset: u16::from_le_bytes([b[8], b[9]]),
    })
}

/// One's-complement sum of `data` (as big-endian 16-bit words) added to `sum`, not folded.
pub(crate) fn sum_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Add the two 32-bit halves; carries are folded at the end.
        sum += w >> 32;
        sum += w & 0xffff_ffff;
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` (ready to store).
pub(crate) fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(0, data))
}

pub(crate) fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u64 {
    let mut sum = sum_words(0, &src.octets());
    sum = sum_words(sum, &dst.octets());
    sum + u64::from(proto) + len as u64
}

/// Turns one read from the TUN device (virtio header + packet) into wire packets, calling `emit` for each.
/// `scratch` must hold one full packet (MTU).
pub(crate) fn split(
    frame: &[u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    let hdr = parse_hdr(frame).ok_or(OffloadError::Malformed)?;
    let packet = &frame[VNET_HDR_LEN..];
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM == 0 {
                emit(packet);
                return Ok(());
            }
            let start = usize::from(hdr.csum_start);
            let at = start + usize::from(hdr.csum_offset);
            if at + 2 > packet.len() || packet.len() > scratch.len() {
                return Err(OffloadError::Malformed);
            }
            let out = &mut scratch[..packet.len()];
            out.copy_from_slice(packet);
            // The field holds the pseudo-header sum; the sum over everything from csum_start completes it.
            let sum = !fold(sum_words(0, &out[start..]));
            out[at..at + 2].copy_from_slice(&sum.to_be_bytes());
            emit(out);
            Ok(())
        }
        GSO_TCPV4 => segment_tcp4(packet, usize::from(hdr.gso_size), scratch, emit),
        _ => Err(OffloadError::Unsupported),
    }
}

fn segment_tcp4(
    packet: &[u8],
    mss: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != PROTO_TCP {
        return Err(OffloadError::Malformed);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl + 20 {
        return Err(OffloadError::Malformed);
    }
    let thl = usize::from(packet[ihl + 12] >> 4) * 4;
    let headers = ihl + thl;
    if thl < 20 || packet.len() < headers || mss == 0 || headers + mss > scratch.len() {
        return Err(OffloadError::Malformed);
    }
    let (src, dst) = ipv4_addrs(packet).ok_or(OffloadError::Malformed)?;
    let ip_id = u16::from_be_bytes([packet[4], packet[5]]);
    let seq = u32::from_be_bytes([
        packet[ihl + 4],
        packet[ihl + 5],
        packet[ihl + 6],
        packet[ihl + 7],
    ]);
    let flags = packet[ihl + 13];
    let payload = &packet[headers..];
    let count = payload.len().div_ceil(mss).max(1);

    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let total = headers + chunk.len();
        let out = &mut scratch[..total];
        out[..headers].copy_from_slice(&packet[..headers]);
        out[headers..].copy_from_slice(chunk);
        // IPv4: length, identification, checksum.
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        out[4..6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        let ip_sum = checksum(&out[..ihl]);
        out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // TCP: sequence number; FIN and PSH only on the last segment, CWR only on the first.
        let tcp = &mut out[ihl..];
        tcp[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !0x80;
        }
        tcp[13] = f;
        tcp[16..18].copy_from_slice(&[0, 0]);
        let sum = pseudo_header_sum(src, dst, PROTO_TCP, tcp.len());
        let tcp_sum = !fold(sum_words(sum, tcp));
        tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
        emit(out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::testpkt::{tcp_checksum_ok, Segment};

    fn tcp_packet(payload_len: usize, flags: u8) -> Vec<u8> {
        Segment {
            ip_id: 0x1234,
            df: false,
            seq: 0xffff_fff0,
            flags,
            tcp_options: vec![0; 12], // a 32-byte TCP header
            payload: (0..payload_len).map(|i| (i * 7) as u8).collect(),
            ..Segment::default()
        }
        .build()
    }

    fn frame(hdr: [u8; VNET_HDR_LEN], packet: &[u8]) -> Vec<u8> {
        [&hdr[..], packet].concat()
    }

    #[test]
    fn tso_frames_become_valid_mss_sized_segments() {
        let mss = 1000u16;
        let packet = tcp_packet(2500, 0x18 | 0x01 | 0x80); // PSH ACK FIN CWR
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV4;
        hdr[4..6].copy_from_slice(&mss.to_le_bytes());
        let mut scratch = [0u8; 2048];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        split(&frame(hdr, &packet), &mut scratch, |s| {
            segs.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(segs.len(), 3);
        let mut payload = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            assert_eq!(checksum(&s[..20]), 0, "IP checksum of segment {i}");
            assert!(tcp_checksum_ok(s), "TCP checksum of segment {i}");
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(i as u32 * 1000));
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
            let last = i == 2;
            assert_eq!(s[33] & 0x01 != 0, last, "FIN only on the last");
            assert_eq!(s[33] & 0x08 != 0, last, "PSH only on the last");
            assert_eq!(s[33] & 0x80 != 0, i == 0, "CWR only on the first");
            assert_eq!(s[33] & 0x10, 0x10, "ACK everywhere");
            assert_eq!(&s[20..52][..4], &packet[20..24]);
            payload.extend_from_slice(&s[52..]);
        }
        assert_eq!(payload, &packet[52..]);
        assert_eq!(segs[2].len(), 52 + 500);
    }

    #[test]
    fn partial_checksums_are_completed_and_plain_packets_pass_through() {
        let mut packet = tcp_packet(301, 0x18);
        // What the kernel leaves for CHECKSUM_PARTIAL: the pseudo-header sum in the checksum field.
        let src = Ipv4Addr::new(10, 0, 0, 2);
        let dst = Ipv4Addr::new(10, 0, 0, 1);
        let partial = fold(pseudo_header_sum(src, dst, PROTO_TCP, packet.len() - 20));
        packet[36..38].copy_from_slice(&partial.to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&20u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
        let mut scratch = [0u8; 2048];
        let mut out = Vec::new();
        split(&frame(hdr, &packet), &mut scratch, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(out.len(), 1);
        assert!(tcp_checksum_ok(&out[0]));

        let plain = tcp_packet(10, 0x10);
        out.clear();
        split(&frame([0; VNET_HDR_LEN], &plain), &mut scratch, |s| {
            out.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(out, vec![plain]);
    }

    #[test]
    fn malformed_and_unsupported_frames_are_refused() {
        let mut scratch = [0u8; 2048];
        assert_eq!(
            split(&[0u8; 5], &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[1] = 4; // TCPv6
        assert_eq!(
            split(&frame(hdr, &tcp_packet(10, 0)), &mut scratch, |_| {}),
            Err(OffloadError::Unsupported)
        );
        hdr[1] = GSO_TCPV4;
        hdr[4..6].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(
            split(&frame(hdr, &[0x45; 30]), &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
        hdr[4..6].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(
            split(&frame(hdr, &tcp_packet(10, 0)), &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
    }
}
