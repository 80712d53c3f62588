//! The proxy's limits against clients that hold connections without using them: a client takes its app's slot
//! and an upstream connection only once its TLS handshake (terminated) or ClientHello (passthrough) is done, and
//! one source cannot take every slot of an app by holding many connections.
//!
//! Real sockets on loopback: the attacking source and the well-behaved one are different loopback addresses
//! (127.0.0.2 and 127.0.0.3), the well-behaved client is curl, and the backend counts the upstream connections
//! it accepts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

#[allow(unused_imports)]
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::accept::{closed_at_accept, ClosedReason, ListenerKind};
use gateway::proxy::config::ProxyConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A TLS client configuration trusting the test CA.
fn tls_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca_pem).unwrap())
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The first flight of a real TLS client for `name`: its ClientHello records.
fn real_client_hello(pki: &Pki, name: &str) -> Vec<u8> {
    let server = ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(tls_client(pki), server).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// curl `https://{name}/` through the proxy from `from`; the HTTP status (0 if the transfer failed) and how long
/// it took.
async fn curl_from(pki: &Pki, gw: SocketAddr, name: &str, from: Ipv4Addr) -> (u16, Duration) {
    let started = Instant::now();
    let out = curl(
        pki,
        gw,
        name,
        &[
            "--interface",
            &from.to_string(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
    )
    .await;
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, started.elapsed())
}

/// Polls `f` every 20 ms until it holds, for at most `limit`.
async fn eventually(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_finish_their_handshake_take_no_slot_and_open_no_upstream() {
    const STALLED: usize = 20;
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let config = ProxyConfig {
        max_connections_per_app: 2,
        // Long deadlines: the stalled clients stay in their handshakes for the whole test.
        client_hello_timeout_ms: 20_000,
        handshake_timeout_ms: 20_000,
        ..test_config(&pki)
    };
    let gw = Running::start(config, one_instance(backend.addr, false)).await;
    let port = backend.addr.port();
    let terminated = format!("{APP}-{port}.{BASE}");
    let passthrough = format!("{APP}-{port}s.{BASE}");

    // Clients that send a real ClientHello for a terminated route, get the gateway's whole first flight, and
    // never answer it; and clients that send half a ClientHello for a passthrough route.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut s = connect(gw.addr).await;
        s.write_all(&real_client_hello(&pki, &terminated))
            .await
            .unwrap();
        stalled.push(s);
    }
    for s in &mut stalled {
        let mut flight = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut flight))
            .await
            .expect("the gateway answers the ClientHello")
            .unwrap();
        assert!(
            n > 0 && flight[0] == 0x16,
            "a ServerHello, not {:?}",
            &flight[..n]
        );
    }
    let hello = real_client_hello(&pki, &passthrough);
    for _ in 0..STALLED {
        let mut s = connect(gw.addr).await;
        s.write_all(&hello[..hello.len() / 2]).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        0,
        "no upstream connection for a client that did not finish its handshake"
    );
    assert_eq!(
        gw.proxy
            .connections()
            .per_app()
            .get(APP)
            .copied()
            .unwrap_or(0),
        0
    );

    // Real clients, under a limit of 2, are served several times while the stalled ones wait.
    for _ in 0..3 {
        let (code, took) = curl_from(&pki, gw.addr, &terminated, Ipv4Addr::LOCALHOST).await;
        assert_eq!(code, 200, "terminated route refused after {took:?}");
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(gw.refusals("app_connection_limit"), 0);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holding_thousands_of_connections_cannot_block_another() {
    const SESSIONS: usize = 150;
    const SILENT: usize = 3000;
    const PER_SOURCE: usize = 50;
    const PER_APP: usize = 100;
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let config = ProxyConfig {
        max_connections_per_app: PER_APP,
        max_connections_per_source: PER_SOURCE,
        client_hello_timeout_ms: 30_000,
        handshake_timeout_ms: 30_000,
        ..test_config(&pki)
    };
    let gw = Running::start(config, one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}.{BASE}", backend.addr.port());
    let closed_before = closed_at_accept().get(ListenerKind::Client, ClosedReason::PerSourceLimit);

    // The attacker completes TLS sessions and keeps them open (each holds a slot of the app and an upstream
    // connection), more than the app's limit, then opens thousands of silent connections.
    let connector = tokio_rustls::TlsConnector::from(tls_client(&pki));
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let tcp = connect_from(ATTACKER, gw.addr).await.unwrap();
        let server = ServerName::try_from(name.clone()).unwrap();
        if let Ok(Ok(tls)) =
            tokio::time::timeout(Duration::from_secs(5), connector.connect(server, tcp)).await
        {
            sessions.push(tls);
        }
    }
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(connect_from(ATTACKER, gw.addr).await.unwrap());
    }
    eventually(
        Duration::from_secs(10),
        "connections over the source's limit closed",
        || {
            closed_at_accept().get(ListenerKind::Client, ClosedReason::PerSourceLimit)
                - closed_before
                >= (SESSIONS + SILENT - PER_SOURCE) as u64
        },
    )
    .await;
    let slots = gw
        .proxy
        .connections()
        .per_app()
        .get(APP)
        .copied()
        .unwrap_or(0);
    eprintln!(
        "attacker: {} TLS sessions completed, {slots} app slots held, {} connections closed at accept",
        sessions.len(),
        closed_at_accept().get(ListenerKind::Client, ClosedReason::PerSourceLimit) - closed_before
    );
    assert!(slots <= PER_SOURCE, "{slots} slots held by one source");

    // Another source is served at once, several times in a row.
    for _ in 0..5 {
        let (code, took) = curl_from(&pki, gw.addr, &name, CLIENT).await;
        assert_eq!(code, 200, "the other source refused after {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "the other source waited {took:?}"
        );
    }
    let metrics = gw.proxy.render_metrics();
    assert!(
        metrics.contains(
            "tee_gateway_connections_closed_at_accept_total{listener=\"client\",reason=\"per_source_limit\"}"
        ),
        "{metrics}"
    );
    drop(silent);
    drop(sessions);
}
