//! The HTTP service shared by the plain and TLS listeners: HTTP/1.1 and h2c on one port, dispatching to the JSON
//! echo, gRPC, WebSocket, server-sent events and bulk payload handlers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::proxy_header::{self, Prefixed, ProxyHeader};
use crate::{grpc, websocket};

/// Response body type of every handler.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body the echo reads.
const MAX_ECHO_BODY: usize = 1 << 20;
/// Header naming the server in every answer.
pub(crate) const SERVED_BY: &str = "x-served-by";

/// What all connections share.
#[derive(Debug)]
pub(crate) struct ServerState {
    name: String,
    cert_pem: String,
    requests: AtomicU64,
}

impl ServerState {
    /// State for a server reporting itself as `name`, whose TLS listener presents `cert_pem`.
    pub(crate) fn new(name: String, cert_pem: String) -> Self {
        Self {
            name,
            cert_pem,
            requests: AtomicU64::new(0),
        }
    }
}

/// What is known about one client connection.
#[derive(Debug, Clone)]
struct ConnInfo {
    peer: SocketAddr,
    proxy: Option<ProxyHeader>,
    tls: bool,
    alpn: Option<String>,
}

/// Serves HTTP until accepting fails: plain HTTP/1.1 and h2c without `tls`, HTTP over TLS (ALPN `h2` or
/// `http/1.1`) with it.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some((stream, proxy, rest)) = read_proxy(stream, peer).await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let stream = Prefixed::new(rest, stream);
            let Some(acceptor) = tls else {
                let info = ConnInfo {
                    peer,
                    proxy,
                    tls: false,
                    alpn: None,
                };
                return serve_connection(stream, info, state).await;
            };
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let alpn = tls
                .get_ref()
                .1
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let info = ConnInfo {
                peer,
                proxy,
                tls: true,
                alpn,
            };
            serve_connection(tls, info, state).await;
        });
    }
}

async fn read_proxy(
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, Option<ProxyHeader>, Vec<u8>)> {
    match proxy_header::read(&mut stream).await {
        Ok((header, rest)) => Some((stream, header, rest)),
        Err(e) => {
            tracing::info!(%peer, error = %e, "dropping connection");
            None
        }
    }
}

async fn serve_connection<S>(io: S, info: ConnInfo, state: Arc<ServerState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = hyper::service::service_fn(move |req| {
        let info = info.clone();
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, &info, &state).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Answer clients that send a request and then shut down their sending side.
    builder.http1().half_close(true);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

async fn handle(req: Request<Incoming>, info: &ConnInfo, state: &ServerState) -> Response<Body> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let is_grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let path = req.uri().path().to_owned();
    let mut response = if is_grpc {
        grpc::handle(req, &state.name).await
    } else if websocket::is_upgrade(&req) {
        websocket::upgrade(req)
    } else if path == "/cert.pem" {
        full(
            StatusCode::OK,
            "application/x-pem-file",
            state.cert_pem.clone(),
        )
    } else if path == "/sse" {
        sse(req.uri().query(), &state.name)
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        bulk(n)
    } else {
        echo(req, info, &state.name, n).await
    };
    if let Ok(v) = HeaderValue::from_str(&state.name) {
        response.headers_mut().insert(SERVED_BY, v);
    }
    response
}

/// Builds a response with a fixed body.
pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn echo(req: Request<Incoming>, info: &ConnInfo, name: &str, n: u64) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return full(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("reading the request body: {e}\n"),
            )
        }
    };
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), v.into());
            }
        }
    }
    let proxy = info.proxy.as_ref().map(|p| {
        serde_json::json!({
            "version": p.version,
            "source": p.source.map(|a| a.to_string()),
            "destination": p.destination.map(|a| a.to_string()),
        })
    });
    let doc = serde_json::json!({
        "server": name,
        "request": n,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "peer": info.peer.to_string(),
        "proxy": proxy,
        "tls": info.tls,
        "alpn": info.alpn,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut text = doc.to_string();
    text.push('\n');
    full(StatusCode::OK, "application/json", text)
}

/// Parses `key=value` pairs of a query string into a number, with a default and an upper bound.
fn query_u64(query: Option<&str>, key: &str, default: u64, max: u64) -> Result<u64, String> {
    let Some(q) = query else { return Ok(default) };
    for pair in q.split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            if k == key {
                return match v.parse::<u64>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(format!("{key} must be a number up to {max}\n")),
                };
            }
        }
    }
    Ok(default)
}

/// `GET /sse?n=N&interval_ms=MS`: N events, MS apart, each naming the server.
fn sse(query: Option<&str>, name: &str) -> Response<Body> {
    let params = query_u64(query, "n", 3, 10_000)
        .and_then(|n| query_u64(query, "interval_ms", 100, 60_000).map(|ms| (n, ms)));
    let (count, interval_ms) = match params {
        Ok(p) => p,
        Err(msg) => return full(StatusCode::BAD_REQUEST, "text/plain", msg),
    };
    let name = name.to_owned();
    let stream = crate::ticks::ticks(count, Duration::from_millis(interval_ms)).map(move |i| {
        let event = format!("id: {i}\nevent: tick\ndata: {name} {i}\n\n");
        Ok::<_, Infallible>(Frame::data(Bytes::from(event)))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r
}

/// `GET /bytes/N`: N bytes of payload, streamed (for throughput measurements).
fn bulk(n: &str) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    const MAX: u64 = 1 << 40;
    let total: u64 = match n.parse() {
        Ok(t) if t <= MAX => t,
        _ => {
            return full(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("/bytes/N: N must be a number up to {MAX}\n"),
            )
        }
    };
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK as u64);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                left - n,
            ))
        }
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        r.headers_mut().insert(hyper::header::CONTENT_LENGTH, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_numbers_are_bounded() {
        assert_eq!(query_u64(None, "n", 3, 10), Ok(3));
        assert_eq!(query_u64(Some("x=1&n=7"), "n", 3, 10), Ok(7));
        assert!(query_u64(Some("n=11"), "n", 3, 10).is_err());
        assert!(query_u64(Some("n=-1"), "n", 3, 10).is_err());
    }
}
