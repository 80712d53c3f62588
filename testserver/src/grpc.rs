//! gRPC over HTTP/2 with raw byte messages (no protobuf: clients call with identity serializers).
//!
//! Service `testserver.Echo`:
//! - `Unary`: answers one message, `<server name> ` followed by the request bytes;
//! - `ServerStream`: the request is ASCII `N` or `N MS`; answers N messages `<server name> <i>`, MS milliseconds
//!   apart (default 0).
//!
//! Framing (gRPC over HTTP/2): each message is a 1-byte compressed flag, a 4-byte big-endian length and the bytes;
//! the status travels in the `grpc-status` trailer (or in the headers of a trailers-only answer on error).

use std::convert::Infallible;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::http::Body;

/// Path of the unary method.
pub(crate) const UNARY: &str = "/testserver.Echo/Unary";
/// Path of the server-streaming method.
pub(crate) const SERVER_STREAM: &str = "/testserver.Echo/ServerStream";
/// Largest request body accepted (all messages together).
const MAX_REQUEST: usize = 4 << 20;
/// Most messages one `ServerStream` call may ask for.
const MAX_STREAM_MESSAGES: u64 = 100_000;

/// gRPC status codes used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Code {
    /// Success.
    Ok = 0,
    /// The request message is not what the method expects.
    InvalidArgument = 3,
    /// A compressed message or an unknown method.
    Unimplemented = 12,
    /// The framing of the request is broken.
    Internal = 13,
}

/// Why a request body is not a sequence of gRPC messages.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    /// The body ends inside a message prefix or message.
    #[error("request body ends inside a message")]
    Truncated,
    /// The compressed flag is set (no compression was negotiated).
    #[error("compressed messages are not supported")]
    Compressed,
}

/// Splits a request body into its messages.
pub(crate) fn decode_messages(mut body: &[u8]) -> Result<Vec<Bytes>, FramingError> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 {
            return Err(FramingError::Truncated);
        }
        if body[0] != 0 {
            return Err(FramingError::Compressed);
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let rest = &body[5..];
        if rest.len() < len {
            return Err(FramingError::Truncated);
        }
        messages.push(Bytes::copy_from_slice(&rest[..len]));
        body = &rest[len..];
    }
    Ok(messages)
}

/// Frames one message (uncompressed).
pub(crate) fn encode_message(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// Answers one gRPC call.
pub(crate) async fn handle(req: Request<Incoming>, name: &str) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path != UNARY && path != SERVER_STREAM {
        return trailers_only(Code::Unimplemented, &format!("unknown method {path}"));
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return trailers_only(Code::Internal, &format!("reading the request: {e}")),
    };
    let messages = match decode_messages(&body) {
        Ok(m) => m,
        Err(e @ FramingError::Compressed) => {
            return trailers_only(Code::Unimplemented, &e.to_string())
        }
        Err(e) => return trailers_only(Code::Internal, &e.to_string()),
    };
    let [message] = messages.as_slice() else {
        return trailers_only(
            Code::InvalidArgument,
            &format!(
                "expected exactly one request message, got {}",
                messages.len()
            ),
        );
    };
    if path == UNARY {
        let mut reply = format!("{name} ").into_bytes();
        reply.extend_from_slice(message);
        return stream_response(futures::stream::iter([encode_message(&reply)]).boxed());
    }
    let (count, interval_ms) = match parse_stream_request(message) {
        Ok(v) => v,
        Err(msg) => return trailers_only(Code::InvalidArgument, &msg),
    };
    let name = name.to_owned();
    let messages = crate::ticks::ticks(count, Duration::from_millis(interval_ms))
        .map(move |i| encode_message(format!("{name} {i}").as_bytes()));
    stream_response(messages.boxed())
}

/// Parses `N` or `N MS`.
fn parse_stream_request(message: &[u8]) -> Result<(u64, u64), String> {
    let text = std::str::from_utf8(message).map_err(|_| "request is not ASCII".to_owned())?;
    let mut fields = text.split_ascii_whitespace();
    let count = fields
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .filter(|n| *n <= MAX_STREAM_MESSAGES)
        .ok_or_else(|| format!("request must be `N [MS]` with N up to {MAX_STREAM_MESSAGES}"))?;
    let interval = match fields.next() {
        None => 0,
        Some(f) => f
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= 60_000)
            .ok_or_else(|| "MS must be a number of milliseconds up to 60000".to_owned())?,
    };
    if fields.next().is_some() {
        return Err("request must be `N [MS]`".to_owned());
    }
    Ok((count, interval))
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    r
}

fn stream_response(messages: futures::stream::BoxStream<'static, Bytes>) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from((Code::Ok as u8) as u16));
    let frames = messages
        .map(|m| Ok::<_, Infallible>(Frame::data(m)))
        .chain(futures::stream::iter([Ok(Frame::trailers(trailers))]));
    grpc_response(BodyExt::boxed_unsync(StreamBody::new(frames)))
}

fn trailers_only(code: Code, message: &str) -> Response<Body> {
    let mut r = grpc_response(BodyExt::boxed_unsync(http_body_util::Empty::new()));
    r.headers_mut()
        .insert("grpc-status", HeaderValue::from((code as u8) as u16));
    // grpc-message is percent-encoded: printable ASCII except `%` stays, everything else becomes `%XX`.
    let safe: String = message
        .bytes()
        .map(|b| {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&safe) {
        r.headers_mut().insert("grpc-message", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trip() {
        let mut body = encode_message(b"hello").to_vec();
        body.extend_from_slice(&encode_message(b""));
        assert_eq!(
            decode_messages(&body).unwrap(),
            vec![Bytes::from_static(b"hello"), Bytes::new()]
        );
    }

    #[test]
    fn framing_errors() {
        let body = encode_message(b"hello");
        assert_eq!(decode_messages(&body[..7]), Err(FramingError::Truncated));
        assert_eq!(decode_messages(&body[..3]), Err(FramingError::Truncated));
        let mut compressed = body.to_vec();
        compressed[0] = 1;
        assert_eq!(decode_messages(&compressed), Err(FramingError::Compressed));
    }

    #[test]
    fn stream_request_grammar() {
        assert_eq!(parse_stream_request(b"3"), Ok((3, 0)));
        assert_eq!(parse_stream_request(b"3 20"), Ok((3, 20)));
        assert!(parse_stream_request(b"x").is_err());
        assert!(parse_stream_request(b"3 20 1").is_err());
        assert!(parse_stream_request(b"1000000").is_err());
    }
}
