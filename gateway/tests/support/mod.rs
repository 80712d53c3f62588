//! Shared pieces of the proxy tests: a test PKI, backends standing in for instances, and a running proxy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::proxy::config::ProxyConfig;
use gateway::proxy::directory::StaticDirectory;
use gateway::proxy::server::Proxy;
use gateway::proxy::tls::CertificateFiles;
use test_support::pki::WebPki;
pub(crate) use test_support::tls::{client_hello_message, records};
use test_support::Scratch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The base domain the tests serve.
pub(crate) const BASE: &str = "apps.test";
/// An app id.
pub(crate) const APP: &str = "aaaaaaaa11111111";

/// The first instance id.
pub(crate) const I1: &str = "1111111111111111";
/// The second instance id.
pub(crate) const I2: &str = "2222222222222222";

/// A directory with one instance of [`APP`], [`I1`], at `addr`.
pub(crate) fn one_instance(addr: std::net::SocketAddr, port_proxy: bool) -> Arc<StaticDirectory> {
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, addr.ip(), [(addr.port(), port_proxy)]);
    d
}

/// A CA and leaf certificates it signs, written as PEM files in a scratch directory of their own.
pub(crate) struct Pki {
    /// The directory of the certificates (and of other files a test writes).
    pub dir: Scratch,
    /// The CA certificate clients trust.
    pub ca_pem: PathBuf,
    web: WebPki,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = Scratch::new("pki");
        let web = WebPki::new(dir.dir(), "tee-gateway test CA");
        Pki {
            ca_pem: web.ca_pem.clone(),
            web,
            dir,
        }
    }

    /// Issues a certificate for `names` with common name `cn`; returns its files.
    pub(crate) fn issue(&self, file: &str, cn: &str, names: &[&str]) -> CertificateFiles {
        let files = self.web.issue(file, cn, names);
        CertificateFiles {
            cert: files.cert,
            key: files.key,
        }
    }
}

/// What a backend does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendKind {
    /// Answers one HTTP/1.1 request with `instance=<id> source=<PROXY source or "none">` and closes.
    Http,
    /// Records every byte it receives until the client closes, then answers `instance=<id> len=<n>`.
    Record,
}

/// A backend standing in for one instance's container.
pub(crate) struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub received: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses a PROXY v2 header at the start of `buf`; returns the source address and the header length.
pub(crate) fn parse_proxy_v2(buf: &[u8]) -> Option<(SocketAddr, usize)> {
    if buf.len() < 16 || buf[..12] != gateway::proxy::proxy_protocol::SIGNATURE {
        return None;
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if buf.len() < 16 + len || buf[13] != 0x11 {
        return None;
    }
    let a = &buf[16..];
    let ip = std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    let port = u16::from_be_bytes([a[8], a[9]]);
    Some((SocketAddr::from((ip, port)), 16 + len))
}

impl Backend {
    pub(crate) async fn start(id: &str, kind: BackendKind) -> Backend {
        Self::start_on("127.0.0.1:0", id, kind).await
    }

    pub(crate) async fn start_on(bind: &str, id: &str, kind: BackendKind) -> Backend {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, r, name) = (accepted.clone(), received.clone(), id.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (r, name) = (r.clone(), name.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = match s.read(&mut chunk).await {
                            Ok(n) => n,
                            Err(_) => return,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let done = match kind {
                            BackendKind::Http => n == 0 || buf.windows(4).any(|w| w == b"\r\n\r\n"),
                            BackendKind::Record => n == 0,
                        };
                        if done {
                            break;
                        }
                    }
                    let answer = match kind {
                        BackendKind::Http => {
                            let source = parse_proxy_v2(&buf)
                                .map(|(a, _)| a.to_string())
                                .unwrap_or_else(|| "none".into());
                            let body = format!("instance={name} source={source}");
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                        }
                        BackendKind::Record => format!("instance={name} len={}", buf.len()),
                    };
                    r.lock().unwrap().push(buf);
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Backend {
            id: id.to_string(),
            addr,
            accepted,
            received,
            task,
        }
    }

    /// Stops accepting: later connection attempts are refused.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// A running proxy on an ephemeral loopback port, started as `gateway run` starts it.
pub(crate) struct Running {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    pub directory: Arc<StaticDirectory>,
    shutdown: CancellationToken,
    running: Option<gateway::proxy::service::Running>,
}

impl Running {
    pub(crate) async fn start(config: ProxyConfig, directory: Arc<StaticDirectory>) -> Running {
        Self::start_with(config, directory, None).await
    }

    pub(crate) async fn start_with(
        mut config: ProxyConfig,
        directory: Arc<StaticDirectory>,
        attester: Option<Arc<dyn attestation::Attester>>,
    ) -> Running {
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let bases = [BASE.to_string()];
        let window = Duration::from_secs(300);
        let proxy = match attester {
            Some(a) => Proxy::with_attester(config, &bases, window, directory.clone(), a),
            None => Proxy::new(config, &bases, window, directory.clone()),
        }
        .unwrap();
        let shutdown = CancellationToken::new();
        let running = gateway::proxy::service::start(proxy.clone(), &shutdown)
            .await
            .unwrap();
        Running {
            proxy,
            addr: running.client_addrs[0],
            directory,
            shutdown,
            running: Some(running),
        }
    }

    /// Signals shutdown and waits for the proxy to finish.
    pub(crate) async fn stop(mut self) -> Duration {
        let started = std::time::Instant::now();
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = running.wait().await;
        }
        started.elapsed()
    }

    pub(crate) fn refusals(&self, reason: &str) -> u64 {
        self.proxy.metrics().refusals(reason)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the service's handle stops and aborts its tasks.
        self.shutdown.cancel();
    }
}

/// A test PKI, a backend of `kind` for instance [`I1`], and a proxy with [`test_config`] routing [`APP`] to it.
pub(crate) async fn one_backend(kind: BackendKind) -> (Pki, Backend, Running) {
    let pki = Pki::new();
    let backend = Backend::start(I1, kind).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    (pki, backend, gw)
}

/// HTTP backends for [`I1`] at `ip1` and [`I2`] at `ip2`, on one port (free at `ip1`), and a directory with both
/// as instances of [`APP`]; returns the port, the two backends and the directory.
pub(crate) async fn two_backends(
    ip1: &str,
    ip2: &str,
) -> (u16, Backend, Backend, Arc<StaticDirectory>) {
    let port = {
        let l = std::net::TcpListener::bind((ip1, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let b1 = Backend::start_on(&format!("{ip1}:{port}"), I1, BackendKind::Http).await;
    let b2 = Backend::start_on(&format!("{ip2}:{port}"), I2, BackendKind::Http).await;
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, ip1.parse().unwrap(), [(port, false)]);
    d.upsert(APP, I2, ip2.parse().unwrap(), [(port, false)]);
    (port, b1, b2, d)
}

/// A proxy configuration for tests with short timeouts.
pub(crate) fn test_config(pki: &Pki) -> ProxyConfig {
    let wildcard = pki.issue("wildcard", "apps.test", &["*.apps.test"]);
    ProxyConfig {
        certificates: vec![wildcard],
        client_hello_timeout_ms: 1_000,
        handshake_timeout_ms: 2_000,
        connect_stagger_ms: 200,
        connect_attempt_timeout_ms: 2_000,
        connect_timeout_ms: 4_000,
        shutdown_grace_secs: 2,
        ..ProxyConfig::default()
    }
}

/// Runs curl against `https://{name}:{port}{path}` through the proxy, trusting the test CA.
pub(crate) async fn curl(
    pki: &Pki,
    proxy: SocketAddr,
    name: &str,
    extra: &[&str],
) -> std::process::Output {
    let url = format!("https://{name}:{}/", proxy.port());
    let resolve = format!("{name}:{}:{}", proxy.port(), proxy.ip());
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&pki.ca_pem)
        .args(["--resolve", &resolve])
        .args(extra)
        .arg(&url)
        .kill_on_drop(true);
    cmd.output().await.unwrap()
}

/// Connects a plain TCP client to the proxy.
pub(crate) async fn connect(proxy: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads what the proxy answers until it closes (or `limit` passes); returns the bytes and the time taken.
pub(crate) async fn read_answer(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration, bool) {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, started.elapsed(), closed)
}
