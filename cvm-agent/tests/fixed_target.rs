//! The forwarder with fixed-address (`HOST:PORT`) targets: a backend that stops is noticed by the probe (or by a
//! forwarded connection it refuses) and its port's listener closes, so connection attempts are refused at once;
//! when the backend is back, the listener opens again. Every change is signalled for an early re-registration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cvm_agent::forward::{ForwardConfig, Forwarder, PortRule};
use test_support::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An echo server on `addr`; aborting the handle closes its listener (the "backend stopped").
async fn echo(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

async fn start(backend: SocketAddr, probe_interval: Duration) -> Forwarder {
    let mut config = ForwardConfig::new(
        "127.0.0.1".parse().unwrap(),
        vec![PortRule {
            port: 0,
            target: backend.to_string().parse().unwrap(),
            proxy_protocol: false,
        }],
    );
    config.probe_interval = probe_interval;
    config.probe_timeout = Duration::from_millis(500);
    Forwarder::start(config, None).await.unwrap()
}

/// One round trip through the forwarder.
async fn round_trip(addr: SocketAddr) -> std::io::Result<()> {
    let mut c = TcpStream::connect(addr).await?;
    c.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "no echo"))??;
    assert_eq!(&buf, b"ping");
    Ok(())
}

/// Polls until a connection attempt to `addr` fails with `kind` (or, with `None`, succeeds) or the deadline passes.
async fn wait_connect(addr: SocketAddr, kind: Option<ErrorKind>, deadline: Duration) -> Duration {
    let start = Instant::now();
    wait_until(
        deadline,
        &format!("connecting to {addr} to give {kind:?}"),
        || async move {
            let got = TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| e.kind());
            if got.err() == kind {
                Ok(Some(()))
            } else {
                anyhow::bail!("still {got:?}")
            }
        },
    )
    .await
    .unwrap();
    start.elapsed()
}

async fn changed(rx: &mut tokio::sync::watch::Receiver<u64>, within: Duration) {
    tokio::time::timeout(within, rx.changed())
        .await
        .expect("no port state change signalled")
        .unwrap();
}

#[tokio::test]
async fn a_stopped_backend_closes_the_listener_until_it_is_back() {
    let interval = Duration::from_millis(300);
    let (backend, server) = echo("127.0.0.1:0".parse().unwrap()).await;
    let fwd = start(backend, interval).await;
    let mut changes = fwd.changes();
    // The first probe (at start) found the backend up.
    changed(&mut changes, Duration::from_secs(5)).await;
    let addr = fwd.local_addrs()[0];
    round_trip(addr).await.unwrap();
    assert!(fwd.port_states().await[0].up);

    // Stopped, and no connection comes in meanwhile: within the probe interval (and a margin for a loaded
    // machine) the probe notices, the change is signalled, new connections are refused by the kernel and the port
    // is reported down.
    server.abort();
    let _ = server.await;
    let stopped = Instant::now();
    changed(&mut changes, interval + Duration::from_secs(2)).await;
    let took = stopped.elapsed();
    eprintln!("stop noticed {took:?} after the backend stopped");
    wait_connect(
        addr,
        Some(ErrorKind::ConnectionRefused),
        Duration::from_secs(1),
    )
    .await;
    assert!(!fwd.port_states().await[0].up);
    // It stays closed while the backend is down: probes go on without reopening it (three probe intervals of
    // watching are what is tested, so the test sleeps through them).
    tokio::time::sleep(interval * 3).await;
    assert_eq!(
        TcpStream::connect(addr).await.unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    assert!(!changes.has_changed().unwrap(), "flapped while down");

    // Back on the same address: the listener opens again within the probe interval and relays.
    let (_, server) = echo(backend).await;
    let restarted = Instant::now();
    wait_connect(addr, None, interval + Duration::from_secs(5)).await;
    eprintln!(
        "listener open again {:?} after the backend restarted",
        restarted.elapsed()
    );
    round_trip(addr).await.unwrap();
    assert!(fwd.port_states().await[0].up);
    changed(&mut changes, Duration::from_secs(1)).await;
    server.abort();
    fwd.shutdown().await;
}

#[tokio::test]
async fn a_refused_forward_marks_the_target_down_at_once() {
    // Probes far apart: only the forwarded connection can notice the stop.
    let (backend, server) = echo("127.0.0.1:0".parse().unwrap()).await;
    let fwd = start(backend, Duration::from_secs(600)).await;
    let mut changes = fwd.changes();
    // The first probe (at start) found the backend up.
    changed(&mut changes, Duration::from_secs(5)).await;
    let addr = fwd.local_addrs()[0];
    round_trip(addr).await.unwrap();

    server.abort();
    let _ = server.await;
    // The listener is still open (no probe is due): this connection is accepted, the backend refuses it, and the
    // client gets a reset rather than a hang.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("the connection was left hanging");
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
    // That failure alone marked the target down: the next attempts are refused, well before any probe.
    let took = wait_connect(
        addr,
        Some(ErrorKind::ConnectionRefused),
        Duration::from_secs(5),
    )
    .await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    changed(&mut changes, Duration::from_secs(1)).await;
    assert!(!fwd.port_states().await[0].up);
    fwd.shutdown().await;
}

#[tokio::test]
async fn a_backend_down_at_start_is_refused_then_accepted_once_it_runs() {
    let interval = Duration::from_millis(200);
    // A free port with nothing listening.
    let backend = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let fwd = start(backend, interval).await;
    let addr = fwd.local_addrs()[0];
    assert!(!fwd.port_states().await[0].up);
    wait_connect(
        addr,
        Some(ErrorKind::ConnectionRefused),
        Duration::from_secs(5),
    )
    .await;
    let (_, server) = echo(backend).await;
    wait_connect(addr, None, interval + Duration::from_secs(5)).await;
    round_trip(addr).await.unwrap();
    assert!(fwd.port_states().await[0].up);
    server.abort();
    fwd.shutdown().await;
}
