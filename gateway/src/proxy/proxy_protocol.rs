//! The PROXY protocol version 2 header, which tells an instance the real client address.
//!
//! Sent as the first bytes on the upstream connection for ports whose policy asks for it (before the replayed
//! ClientHello on passthrough routes). Binary format, command PROXY, transport STREAM.

use std::net::SocketAddr;

/// The fixed 12-byte signature that starts every version 2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Encodes a PROXY v2 header for a TCP connection from `source` to `destination`.
///
/// When the two addresses are of different families, both are sent as IPv6 (IPv4 addresses mapped).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        (s, d) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&to_v6(s).octets());
            out.extend_from_slice(&to_v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn to_v6(addr: SocketAddr) -> std::net::Ipv6Addr {
    match addr {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_matches_the_specification_layout() {
        let h = encode_v2(
            "198.18.0.2:51234".parse().unwrap(),
            "10.0.0.5:8080".parse().unwrap(),
        );
        assert_eq!(h.len(), 28);
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 12);
        assert_eq!(&h[16..20], &[198, 18, 0, 2]);
        assert_eq!(&h[20..24], &[10, 0, 0, 5]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 51234);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8080);
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let h = encode_v2(
            "[2001:db8::1]:443".parse().unwrap(),
            "10.0.0.5:80".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(h[13], 0x21);
        assert_eq!(
            &h[16..32],
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(
            &h[32..48],
            &"::ffff:10.0.0.5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
