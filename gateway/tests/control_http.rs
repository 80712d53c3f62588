//! The control listener over real TLS and HTTP (reqwest): each refusal gets its typed JSON error and status, and
//! refusals leave the registry and the peer table unchanged; the listener's handshake deadline and connection
//! cap hold against raw TCP and TLS clients; one source holding thousands of connections does not keep another
//! source out, and a client that trickles its request head (slowloris) or sits idle is cut off.
//!
//! The RA-TLS verifiers are exercised elsewhere; here the peer's attestation comes from a stand-in identity so the
//! HTTP layer (limits, statuses, bodies) is tested on its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::control::http::{router, serve, ControlState};
use gateway::control::listener::{ListenerLimits, TlsListener};
use gateway::control::rate::RateLimiter;
use gateway::control::tunnel::MemoryPeers;
use gateway::control::{ControlService, PeerAttestation, ResponseSettings};
use gateway::registry::{Admission, MemoryStore, Registry};
use protocol::control::{AppId, ErrorBody, ErrorCode, PublicKey, RegisterResponse};

#[path = "support/control_service.rs"]
mod control_service;
use control_service::{admitted, memory_service, APP};

struct Server {
    url: String,
    port: u16,
    cert: rustls::pki_types::CertificateDer<'static>,
    client: reqwest::Client,
    service: ControlService,
    peers: Arc<MemoryPeers>,
    _task: tokio::task::JoinHandle<()>,
}

/// Handshake deadline of the test listener.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Header-read timeout of the test server.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

async fn start(per_sec: u32, burst: u32) -> Server {
    start_limited(per_sec, burst, 16).await
}

async fn start_limited(per_sec: u32, burst: u32, max_connections: usize) -> Server {
    start_with(
        per_sec,
        ListenerLimits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections,
            max_connections_per_source: max_connections,
            idle_timeout: Duration::from_secs(30),
        },
        burst,
    )
    .await
}

async fn start_with(per_sec: u32, limits: ListenerLimits, burst: u32) -> Server {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(
        tcp,
        acceptor,
        Arc::new(|_: &rustls::ServerConnection| {
            Some(Arc::new(admitted(1, u64::MAX)) as Arc<dyn PeerAttestation>)
        }),
        limits,
    )
    .unwrap();
    let port = listener.local_addr().port();
    let (service, peers) = memory_service(Duration::from_secs(86400));
    let state = ControlState {
        service: service.clone(),
        limiter: Arc::new(RateLimiter::new(per_sec, burst)),
        max_body_bytes: 4096,
        request_timeout: Duration::from_secs(2),
        attestation: Arc::new(|| serde_json::json!({"platform": "test"})),
    };
    let task = tokio::spawn(serve(
        listener,
        router(state),
        HEADER_READ_TIMEOUT,
        tokio_util::sync::CancellationToken::new(),
    ));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(cert_der.as_ref()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    Server {
        url: format!("https://localhost:{port}"),
        port,
        cert: cert_der,
        client,
        service,
        peers,
        _task: task,
    }
}

fn body(instance: &str, key: u8, version: u32) -> serde_json::Value {
    serde_json::json!({
        "version": version,
        "app_id": APP,
        "instance_id": instance,
        "wireguard_public_key": PublicKey::from_bytes([key; 32]).unwrap().to_string(),
        "ports": [{"port": 8080, "proxy_protocol": true}],
    })
}

impl Server {
    /// POSTs `bytes` as `content_type` to the registration endpoint.
    async fn register(&self, content_type: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/register", self.url))
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path`.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }
}

async fn post_raw(s: &Server, content_type: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
    let r = s.register(content_type, bytes).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Registers `instance` with key `key` (protocol version 1), which must be answered 200 OK: the answer.
async fn register_ok(s: &Server, instance: &str, key: u8) -> serde_json::Value {
    let bytes = serde_json::to_vec(&body(instance, key, 1)).unwrap();
    let (status, json) = post_raw(s, "application/json", bytes).await;
    assert_eq!(status, 200, "{json}");
    json
}

async fn expect_error(
    s: &Server,
    content_type: &str,
    bytes: Vec<u8>,
    status: u16,
    code: ErrorCode,
) -> ErrorBody {
    let (got, json) = post_raw(s, content_type, bytes).await;
    let e: ErrorBody = serde_json::from_value(json.clone())
        .unwrap_or_else(|_| panic!("untyped error body {json}"));
    assert_eq!((got, e.error), (status, code), "{e}");
    assert!(!e.message.is_empty());
    e
}

/// POSTs `json` as `application/json`; see [`expect_error`].
async fn expect_json_error(
    s: &Server,
    json: &serde_json::Value,
    status: u16,
    code: ErrorCode,
) -> ErrorBody {
    let bytes = serde_json::to_vec(json).unwrap();
    expect_error(s, "application/json", bytes, status, code).await
}

#[tokio::test]
async fn register_and_every_refusal_over_tls() {
    let s = start(1000, 1000).await;
    let answer: RegisterResponse =
        serde_json::from_value(register_ok(&s, "11111111", 1).await).unwrap();
    assert_eq!(answer.gateway.tunnel_address, Ipv4Addr::new(10, 0, 0, 1));
    let before = s.peers.snapshot();
    assert_eq!(before.len(), 1);

    let dup = body("22222222", 1, 1);
    let e = expect_json_error(&s, &dup, 409, ErrorCode::KeyInUse).await;
    assert!(e.message.contains("11111111"), "{e}");
    expect_error(
        &s,
        "application/json",
        b"{\"version\": 1, garbage".to_vec(),
        400,
        ErrorCode::MalformedRequest,
    )
    .await;
    let e = expect_json_error(
        &s,
        &body("22222222", 2, 7),
        400,
        ErrorCode::UnsupportedVersion,
    )
    .await;
    assert!(e.message.contains("unsupported protocol version 7"), "{e}");
    let mut big = body("22222222", 2, 1);
    big["padding"] = "x".repeat(10_000).into();
    expect_json_error(&s, &big, 413, ErrorCode::BodyTooLarge).await;
    expect_error(
        &s,
        "text/plain",
        serde_json::to_vec(&body("22222222", 2, 1)).unwrap(),
        415,
        ErrorCode::UnsupportedMediaType,
    )
    .await;
    let mut other_app = body("22222222", 2, 1);
    other_app["app_id"] = "bbbbbbbbbbbbbbbb".into();
    expect_json_error(&s, &other_app, 403, ErrorCode::AppUnknown).await;

    // A chunked body over the limit (no Content-Length) is cut off too.
    let (status, json) = raw_chunked(&s, 10, 1000).await;
    assert_eq!(status, 413, "{json}");
    assert!(json.contains("body_too_large"), "{json}");

    for (path, status, code) in [
        ("/v1/register", 405, ErrorCode::MethodNotAllowed),
        ("/nope", 404, ErrorCode::NotFound),
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.json::<ErrorBody>().await.unwrap().error, code, "{path}");
    }
    let r = s.get("/v1/attestation").await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["platform"],
        "test"
    );

    assert_eq!(s.service.registry().lock().unwrap().len(), 1);
    assert_eq!(s.peers.snapshot(), before);
}

#[tokio::test]
async fn request_rate_is_limited_per_source() {
    let s = start(1, 3).await;
    let mut statuses = Vec::new();
    for i in 0..5u8 {
        let b = serde_json::to_vec(&body(&format!("1111111{i}"), i + 1, 1)).unwrap();
        let r = s.register("application/json", b).await;
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 {
            assert!(r.headers().get("retry-after").is_some());
            assert_eq!(
                r.json::<ErrorBody>().await.unwrap().error,
                ErrorCode::RateLimited
            );
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    assert_eq!(s.service.registry().lock().unwrap().len(), 3);
}

/// Sends a chunked request by hand (no Content-Length) and returns the status and the body text.
async fn raw_chunked(s: &Server, chunks: usize, chunk_len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let head =
        "POST /v1/register HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        let chunk = format!("{chunk_len:x}\r\n{}\r\n", " ".repeat(chunk_len));
        if tls.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = tls.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A TLS client connection to the test server (no client certificate: the stand-in listener asks for none).
async fn tls_connect(
    s: &Server,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// `GET /v1/attestation` on an open keep-alive connection; the answer's status.
async fn get_on(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /v1/attestation HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(head.get(9..12).and_then(|v| v.parse().ok()).unwrap_or(0));
            }
        }
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until the server closes `stream` (EOF or reset) and returns how long that took; fails if it sends
/// anything or stays open for `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("the server sent {n} bytes to a client that sent no handshake"),
        Err(_) => panic!("the connection was still open after {limit:?}"),
    }
}

/// A connection over the cap is closed at once, well before the handshake deadline, without a TLS answer.
async fn over_cap_is_closed(s: &Server) {
    let started = std::time::Instant::now();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT / 2, tls_connect(s)).await {
        Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("a connection over the cap was accepted"),
        Err(_) => panic!(
            "over the cap, the connection lingered {:?} without an answer",
            started.elapsed()
        ),
    }
}

#[tokio::test]
async fn handshake_deadline_and_connection_cap() {
    use tokio::io::AsyncWriteExt;
    let s = start_limited(1000, 1000, 3).await;

    // A client that connects and sends nothing, and one that sends half a TLS record header, are both closed at
    // the handshake deadline (2 s), not earlier and not much later.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let mut partial = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let (a, b) = tokio::join!(
        closed_within(&mut silent, Duration::from_secs(10)),
        closed_within(&mut partial, Duration::from_secs(10))
    );
    for waited in [a, b] {
        assert!(
            waited >= HANDSHAKE_TIMEOUT - Duration::from_millis(100)
                && waited < HANDSHAKE_TIMEOUT + Duration::from_secs(2),
            "closed after {waited:?}, the deadline is {HANDSHAKE_TIMEOUT:?}"
        );
    }

    // Three connections (the cap) are open and served.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = tls_connect(&s).await.unwrap();
        assert_eq!(get_on(&mut c).await.unwrap(), 200);
        open.push(c);
    }
    // A fourth is closed at once, well before the handshake deadline, without a TLS answer (several tries).
    for _ in 0..3 {
        over_cap_is_closed(&s).await;
    }
    // ... while the open ones are still served.
    for c in &mut open {
        assert_eq!(get_on(c).await.unwrap(), 200);
    }
    // Once one closes, a new connection is accepted and served (the server notices the close asynchronously).
    let mut first = open.remove(0);
    first.shutdown().await.unwrap();
    drop(first);
    let server = &s;
    let mut fresh = test_support::wait_until(
        Duration::from_secs(5),
        "a connection accepted after one closed",
        || async move { Ok(tls_connect(server).await.ok()) },
    )
    .await
    .unwrap();
    assert_eq!(get_on(&mut fresh).await.unwrap(), 200);
    // The cap still holds with the new one.
    over_cap_is_closed(&s).await;
    for c in &mut open {
        assert_eq!(get_on(c).await.unwrap(), 200);
    }
}

/// A TCP connection to the test server from the loopback address `source`.
async fn connect_from(s: &Server, source: Ipv4Addr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    socket.connect(([127, 0, 0, 1], s.port).into()).await
}

/// A registration client whose connections come from the loopback address `source`.
fn client_from(s: &Server, source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(s.cert.as_ref()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], s.port).into())
        .local_address(std::net::IpAddr::V4(source))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holding_thousands_of_connections_does_not_block_another() {
    use gateway::accept::{closed_at_accept, ClosedReason, ListenerKind};
    const HELD: usize = 3000;
    const PER_SOURCE: usize = 64;
    // The total is the default (1024): one source's connections could take all of it without a per-source
    // limit. A long handshake deadline keeps the held connections open for the whole test.
    let s = start_with(
        1000,
        ListenerLimits {
            handshake_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_source: PER_SOURCE,
            idle_timeout: Duration::from_secs(30),
        },
        1000,
    )
    .await;
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let closed_before = closed_at_accept().get(ListenerKind::Control, ClosedReason::PerSourceLimit);
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(connect_from(&s, attacker).await.unwrap());
    }
    // Every connection beyond the source's limit is closed by the listener, at once.
    let closed = test_support::wait_until(
        Duration::from_secs(10),
        "the attacker's connections beyond its limit closed",
        || async {
            let n = closed_at_accept().get(ListenerKind::Control, ClosedReason::PerSourceLimit)
                - closed_before;
            Ok((n >= (HELD - PER_SOURCE) as u64).then_some(n))
        },
    )
    .await
    .unwrap();
    eprintln!("{closed} of {HELD} connections of one source closed at accept");

    // Another source registers at once, several times, while the attacker still holds its connections.
    let other = client_from(&s, Ipv4Addr::new(127, 0, 0, 3));
    for i in 0..5u8 {
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            other
                .post(format!("{}/v1/register", s.url))
                .json(&body(&format!("3333333{i}"), 30 + i, 1))
                .send(),
        )
        .await
        .expect("the other source is answered")
        .expect("the other source's connection is served");
        assert_eq!(answer.status().as_u16(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the other source waited {:?}",
            started.elapsed()
        );
    }
    // A fresh connection of the attacker is still closed before any TLS.
    let mut extra = connect_from(&s, attacker).await.unwrap();
    closed_within(&mut extra, Duration::from_secs(2)).await;
    drop(held);
}

/// A TLS connection on which part of a request head (`head`) was sent; returns it and when it was sent.
async fn partial_request(
    s: &Server,
    head: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tls = tls_connect(s).await.unwrap();
    tls.write_all(head).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// Reads from `tls` until the server ends the connection; returns how long that took and what it sent. Fails
/// if the connection is still open after `limit`.
async fn ended_within(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    limit: Duration,
    mut trickle: Option<&[u8]>,
) -> (Duration, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let remaining = limit.saturating_sub(started.elapsed());
        assert!(
            !remaining.is_zero(),
            "the connection was still open after {limit:?}"
        );
        // A slow client sends one more byte of its head every 300 ms, so the connection is never idle.
        let wait = if trickle.is_some() {
            remaining.min(Duration::from_millis(300))
        } else {
            remaining
        };
        match tokio::time::timeout(wait, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {
                if let Some(rest) = trickle {
                    if let Some((byte, tail)) = rest.split_first() {
                        if tls.write_all(&[*byte]).await.is_err() {
                            return (started.elapsed(), got);
                        }
                        let _ = tls.flush().await;
                        trickle = Some(tail);
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_and_idle_connections_are_cut_off() {
    let s = start(1000, 1000).await;
    let margin = Duration::from_millis(1500);
    // Slowloris: a request line and part of the headers, then one more header byte every 300 ms (never idle,
    // never done).
    let mut slow = partial_request(&s, b"POST /v1/register HTTP/1.1\r\nhost: localhost\r\n").await;
    let trickle =
        b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
    // A head that stops halfway and a connection that sends nothing after its handshake.
    let mut stalled = partial_request(&s, b"GET /v1/attestation HTTP/1.1\r\nhos").await;
    let mut silent = tls_connect(&s).await.unwrap();
    let registering = async {
        // Meanwhile a normal registration is served at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        register_ok(&s, "44444444", 44).await;
        started.elapsed()
    };
    let limit = HEADER_READ_TIMEOUT + margin;
    let ((slow_after, _), (stalled_after, _), (silent_after, _), registered_in) = tokio::join!(
        ended_within(&mut slow, limit, Some(&trickle)),
        ended_within(&mut stalled, limit, None),
        ended_within(&mut silent, limit, None),
        registering,
    );
    for (what, after) in [
        ("slowloris", slow_after),
        ("half a head", stalled_after),
        ("silent", silent_after),
    ] {
        eprintln!("{what}: closed after {after:?}");
        assert!(
            after + Duration::from_millis(200) >= HEADER_READ_TIMEOUT,
            "{what}: closed after {after:?}, before the header-read timeout"
        );
    }
    assert!(registered_in < Duration::from_secs(1), "{registered_in:?}");

    // A kept-alive connection that served a request and then sits idle goes at the same timeout.
    let mut kept = tls_connect(&s).await.unwrap();
    assert_eq!(get_on(&mut kept).await.unwrap(), 200);
    let (after, _) = ended_within(&mut kept, limit, None).await;
    eprintln!("idle keep-alive: closed after {after:?}");
}

#[tokio::test]
async fn a_connection_on_which_nothing_moves_is_closed_at_the_idle_timeout() {
    // The header-read timeout is longer than the idle timeout here: the listener's idle rule ends the
    // connection on its own.
    let s = start_with(
        1000,
        ListenerLimits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: 16,
            max_connections_per_source: 16,
            idle_timeout: Duration::from_secs(1),
        },
        1000,
    )
    .await;
    let mut tls = partial_request(&s, b"GET /v1/attestation HTTP/1.1\r\n").await;
    let (after, _) = ended_within(&mut tls, Duration::from_secs(3), None).await;
    assert!(
        after >= Duration::from_millis(800) && after < HEADER_READ_TIMEOUT,
        "closed after {after:?}"
    );
}
