//! WebSocket echo (RFC 6455) over an HTTP/1.1 upgrade: every data frame comes back with the same opcode and FIN
//! bit, pings are answered with pongs, and a close is echoed before the connection ends.

use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http::{full, Body};

/// The GUID that RFC 6455 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame payload accepted.
const MAX_PAYLOAD: u64 = 16 << 20;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close codes sent on protocol errors.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_TOO_BIG: u16 = 1009;

/// Whether the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The `Sec-WebSocket-Accept` value for a client key.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Answers the upgrade request and, once the connection is upgraded, echoes frames on it.
pub(crate) fn upgrade(req: Request<Incoming>) -> Response<Body> {
    if req.version() != hyper::Version::HTTP_11 {
        return full(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "WebSocket needs HTTP/1.1\n",
        );
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = full(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "Sec-WebSocket-Version must be 13\n",
        );
        r.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return full(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "missing Sec-WebSocket-Key\n",
        );
    };
    let accept = accept_key(key.as_bytes());
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                if let Err(e) = echo_frames(TokioIo::new(upgraded)).await {
                    tracing::debug!(error = %e, "WebSocket connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "text/plain", "");
    r.headers_mut().remove(hyper::header::CONTENT_TYPE);
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// Writes one unmasked (server-to-client) frame.
async fn write_frame<S: AsyncWrite + Unpin>(
    s: &mut S,
    fin: bool,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut header = Vec::with_capacity(10);
    header.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n if n < 126 => header.push(n as u8),
        n if n <= u16::MAX as usize => {
            header.push(126);
            header.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            header.push(127);
            header.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    s.write_all(&header).await?;
    s.write_all(payload).await?;
    s.flush().await
}

async fn close<S: AsyncWrite + Unpin>(s: &mut S, code: u16) -> std::io::Result<()> {
    write_frame(s, true, OP_CLOSE, &code.to_be_bytes()).await
}

/// Echoes frames until the client closes.
pub(crate) async fn echo_frames<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        match s.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let fin = head[0] & 0x80 != 0;
        let rsv = head[0] & 0x70;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(s.read_u16().await?),
            127 => s.read_u64().await?,
            n => u64::from(n),
        };
        let is_control = opcode >= 0x8;
        if rsv != 0 || !masked || (is_control && (!fin || len > 125)) {
            return close(&mut s, CLOSE_PROTOCOL_ERROR).await;
        }
        if len > MAX_PAYLOAD {
            return close(&mut s, CLOSE_TOO_BIG).await;
        }
        let mut mask = [0u8; 4];
        s.read_exact(&mut mask).await?;
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                write_frame(&mut s, fin, opcode, &payload).await?
            }
            OP_PING => write_frame(&mut s, true, OP_PONG, &payload).await?,
            OP_PONG => {}
            OP_CLOSE => {
                let echo = if payload.len() >= 2 {
                    &payload[..2]
                } else {
                    &[][..]
                };
                write_frame(&mut s, true, OP_CLOSE, echo).await?;
                return s.shutdown().await;
            }
            _ => return close(&mut s, CLOSE_PROTOCOL_ERROR).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with a short payload.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![
            if fin { 0x80 } else { 0 } | opcode,
            0x80 | payload.len() as u8,
        ];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn echoes_text_ping_and_close() {
        let (mut client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(echo_frames(server));
        let mut input = client_frame(true, OP_TEXT, b"hi");
        input.extend(client_frame(true, OP_PING, b"p"));
        input.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        client.write_all(&input).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(
            out,
            [
                &[0x81, 2][..],
                b"hi",
                &[0x8a, 1],
                b"p",
                &[0x88, 2, 0x03, 0xe8]
            ]
            .concat()
        );
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn unmasked_frame_is_a_protocol_error() {
        let (mut client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(echo_frames(server));
        client.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        let mut out = [0u8; 4];
        client.read_exact(&mut out).await.unwrap();
        assert_eq!(out, [0x88, 2, 0x03, 0xea]);
        task.await.unwrap().unwrap();
    }
}
