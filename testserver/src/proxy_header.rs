//! Recognises a PROXY protocol header (v1 text or v2 binary) at the start of a connection, so the echo can report
//! what an intermediary announced. A sans-IO parser ([`parse`]) plus the async reader ([`read`]) and the
//! [`Prefixed`] stream that hands the bytes read past the header back to the HTTP or TLS layer.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The 12-byte signature that starts a v2 header.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// Largest v2 header accepted here (signature, fixed part and addresses/TLVs).
const V2_MAX: usize = 16 + 1024;

/// A PROXY protocol header as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The announced client address; `None` for `UNKNOWN` (v1) or `LOCAL`/unspecified (v2).
    pub source: Option<SocketAddr>,
    /// The announced destination address, when given.
    pub destination: Option<SocketAddr>,
}

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    /// Reading from the connection failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
    /// The connection began like a PROXY header but is not a valid one.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// The bytes are not a PROXY header.
    NotProxy,
    /// The bytes so far are a prefix of a header; read more.
    NeedMore,
    /// A complete header, and how many bytes it took.
    Header(ProxyHeader, usize),
}

/// Looks at the first bytes of a connection.
pub(crate) fn parse(buf: &[u8]) -> Result<Parse, ProxyHeaderError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] && !buf.is_empty() {
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] && !buf.is_empty() {
        return parse_v2(buf);
    }
    if buf.is_empty() {
        return Ok(Parse::NeedMore);
    }
    Ok(Parse::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Parse, ProxyHeaderError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(Parse::NeedMore)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyHeaderError::Malformed("v1 line is not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let (source, destination) = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => (None, None),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let addr = |ip: &str, port: &str| -> Result<SocketAddr, ProxyHeaderError> {
                let port: u16 = port
                    .parse()
                    .map_err(|_| ProxyHeaderError::Malformed("v1 port is not a number"))?;
                let ip: std::net::IpAddr = ip
                    .parse()
                    .map_err(|_| ProxyHeaderError::Malformed("v1 address is not an IP"))?;
                if ip.is_ipv4() != (*proto == "TCP4") {
                    return Err(ProxyHeaderError::Malformed("v1 address family mismatch"));
                }
                Ok(SocketAddr::new(ip, port))
            };
            (Some(addr(src, sport)?), Some(addr(dst, dport)?))
        }
        _ => return Err(ProxyHeaderError::Malformed("v1 line has the wrong fields")),
    };
    Ok(Parse::Header(
        ProxyHeader {
            version: 1,
            source,
            destination,
        },
        end + 2,
    ))
}

fn parse_v2(buf: &[u8]) -> Result<Parse, ProxyHeaderError> {
    if buf.len() < 16 {
        return Ok(Parse::NeedMore);
    }
    if buf[12] >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version nibble is not 2"));
    }
    let command = buf[12] & 0x0f;
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + len;
    if total > V2_MAX {
        return Err(ProxyHeaderError::Malformed("v2 header too long"));
    }
    if buf.len() < total {
        return Ok(Parse::NeedMore);
    }
    let body = &buf[16..total];
    let (source, destination) = match (command, buf[13]) {
        (0, _) => (None, None),
        (1, 0x11) if body.len() >= 12 => {
            let ip = |o: usize| Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]);
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            (
                Some(SocketAddr::new(ip(0).into(), port(8))),
                Some(SocketAddr::new(ip(4).into(), port(10))),
            )
        }
        (1, 0x21) if body.len() >= 36 => {
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&body[o..o + 16]);
                Ipv6Addr::from(a)
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            (
                Some(SocketAddr::new(ip(0).into(), port(32))),
                Some(SocketAddr::new(ip(16).into(), port(34))),
            )
        }
        (1, 0x00) => (None, None),
        (1, _) => {
            return Err(ProxyHeaderError::Malformed(
                "v2 address block too short or unsupported",
            ))
        }
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ))
        }
    };
    Ok(Parse::Header(
        ProxyHeader {
            version: 2,
            source,
            destination,
        },
        total,
    ))
}

/// Reads the start of `stream` until it is known whether a PROXY header is present. Returns the header, if any,
/// and the bytes read beyond it (to be replayed with [`Prefixed`]).
pub(crate) async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Option<ProxyHeader>, Vec<u8>), ProxyHeaderError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        match parse(&buf)? {
            Parse::NotProxy => return Ok((None, buf)),
            Parse::Header(header, used) => return Ok((Some(header), buf.split_off(used))),
            Parse::NeedMore => {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    // The peer closed before a complete header: hand back what came, the next layer reports it.
                    return Ok((None, buf));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// A stream that yields `prefix` before reading from `inner`; writes go straight to `inner`.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_not_proxy() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").unwrap(), Parse::NotProxy);
        assert_eq!(parse(b"POST / HTTP/1.1\r\n").unwrap(), Parse::NotProxy);
        assert_eq!(parse(b"\x16\x03\x01").unwrap(), Parse::NotProxy);
        assert_eq!(parse(b"PRI * HTTP/2.0").unwrap(), Parse::NotProxy);
    }

    #[test]
    fn v1_tcp4() {
        let raw = b"PROXY TCP4 198.18.0.9 198.18.0.2 51234 443\r\nGET";
        let Parse::Header(h, used) = parse(raw).unwrap() else {
            panic!("no header")
        };
        assert_eq!(used, raw.len() - 3);
        assert_eq!(h.version, 1);
        assert_eq!(h.source, Some("198.18.0.9:51234".parse().unwrap()));
        assert_eq!(h.destination, Some("198.18.0.2:443".parse().unwrap()));
    }

    #[test]
    fn v1_partial_needs_more_and_garbage_is_refused() {
        assert_eq!(parse(b"PRO").unwrap(), Parse::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), Parse::NeedMore);
        assert!(parse(b"PROXY TCP4 1.2.3.4 nope 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n").is_err());
        assert!(parse(&[b"PROXY ".as_slice(), &[b'A'; 120]].concat()).is_err());
    }

    #[test]
    fn v2_tcp4_and_local() {
        let mut raw = V2_SIGNATURE.to_vec();
        raw.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 9, 10, 0, 0, 1, 0x1f, 0x90, 0, 80,
        ]);
        raw.extend_from_slice(b"xyz");
        let Parse::Header(h, used) = parse(&raw).unwrap() else {
            panic!("no header")
        };
        assert_eq!(used, 28);
        assert_eq!(h.source, Some("10.0.0.9:8080".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.1:80".parse().unwrap()));
        assert_eq!(parse(&raw[..20]).unwrap(), Parse::NeedMore);

        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let Parse::Header(h, 16) = parse(&local).unwrap() else {
            panic!("no header")
        };
        assert_eq!(h.source, None);

        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&bad).is_err());
    }

    #[tokio::test]
    async fn read_returns_leftover_for_replay() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"PROXY UNKNOWN\r\nhello")
            .await
            .unwrap();
        drop(a);
        let (h, rest) = read(&mut b).await.unwrap();
        assert_eq!(h.unwrap().source, None);
        let mut p = Prefixed::new(rest, b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello");
    }
}
