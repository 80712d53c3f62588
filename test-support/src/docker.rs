//! Tests with the real Docker engine: the test image (built by `scripts/build-test-image.sh`), containers and
//! networks removed also when a test fails, small clients of the test server, a relay for the engine's API socket
//! that a test can cut and restore (an engine outage as the agent sees it, without touching the engine), and the
//! test server binary taken out of the image for process backends. Tests that use the engine need root (or the
//! `docker` group) and are marked `#[ignore = "needs root and a Docker engine ..."]`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::binaries::repo_file;
use crate::wait::wait_until;

/// The image the tests run (built by `scripts/build-test-image.sh`).
pub const IMAGE: &str = "tee-gateway-testserver:latest";
/// Label on everything the tests create; its value is the creating process id.
pub const TEST_LABEL: &str = "tee-gateway.test";
/// The Docker engine's API socket.
pub const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `docker ARGS`, returning stdout, or an error with its stderr.
pub fn try_docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds the test image if missing or stale, and removes what crashed earlier runs left; once per process.
pub fn prepare() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = repo_file("scripts/build-test-image.sh");
        let status = Command::new(&script)
            .arg("--if-stale")
            .status()
            .expect("running scripts/build-test-image.sh");
        assert!(status.success(), "building the test image failed");
        remove_stale();
    });
}

/// Removes containers and networks labelled by test processes that no longer run.
fn remove_stale() {
    let dead = |pid: &str| !PathBuf::from(format!("/proc/{pid}")).exists();
    let filter = format!("label={TEST_LABEL}");
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{TEST_LABEL}\"}}}}");
    for line in docker(&["ps", "-a", "--filter", &filter, "--format", &fmt]).lines() {
        if let Some((id, pid)) = line.split_once(' ') {
            if dead(pid) {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{TEST_LABEL}\"}}}}");
    for line in docker(&["network", "ls", "--filter", &filter, "--format", &fmt]).lines() {
        if let Some((id, pid)) = line.split_once(' ') {
            if dead(pid) {
                let _ = Command::new("docker").args(["network", "rm", id]).output();
            }
        }
    }
}

/// A name unique to this process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "tgw-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A tunnel-side port unlikely to collide with concurrent tests or earlier runs (for `tee-gateway.port`).
pub fn unique_port() -> u16 {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 2_000) * 20;
    (base + N.fetch_add(1, Ordering::Relaxed) % 20) as u16
}

/// Containers and networks created by one test; removed on drop.
#[derive(Debug, Default)]
pub struct Containers {
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Containers {
    /// Starts a test-server container named `name` (also its host name) with `labels` and extra `docker run`
    /// arguments.
    pub fn run(&mut self, name: &str, labels: &[(&str, String)], extra: &[&str]) {
        self.containers.push(name.to_owned());
        let pid = format!("{TEST_LABEL}={}", std::process::id());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--label",
            &pid,
        ];
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for l in &labels {
            args.extend(["--label", l.as_str()]);
        }
        args.extend(extra);
        args.push(IMAGE);
        docker(&args);
    }

    /// [`Containers::run`], then [`Containers::wait_ready`].
    pub async fn start(&mut self, name: &str, labels: &[(&str, String)], extra: &[&str]) {
        self.run(name, labels, extra);
        self.wait_ready(name).await;
    }

    /// Creates a bridge network with a subnet of its own (so tests can pin addresses); returns its name and the
    /// first three octets of the subnet.
    pub fn network(&mut self, name: &str) -> (String, String) {
        let pid = format!("{TEST_LABEL}={}", std::process::id());
        for attempt in 0..20u32 {
            let third = (std::process::id() + attempt * 7) % 250;
            let prefix = format!("172.30.{third}");
            let subnet = format!("{prefix}.0/24");
            let ok = Command::new("docker")
                .args([
                    "network", "create", "--subnet", &subnet, "--label", &pid, name,
                ])
                .output()
                .expect("running the docker CLI")
                .status
                .success();
            if ok {
                self.networks.push(name.to_owned());
                return (name.to_owned(), prefix);
            }
        }
        panic!("no free subnet in 172.30.0.0/16 for a test network");
    }

    /// Waits until the container's test server accepts connections on its address (at most 10 s).
    pub async fn wait_ready(&self, name: &str) {
        wait_until(
            Duration::from_secs(10),
            &format!("{name} serving"),
            || async move {
                let ip: IpAddr = self.address(name).parse()?;
                let addr = SocketAddr::new(ip, 8080);
                let connected =
                    tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
                        .await;
                Ok(matches!(connected, Ok(Ok(_))).then_some(()))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The container's address in its (first) network.
    pub fn address(&self, name: &str) -> String {
        docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            name,
        ])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.containers.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
        for n in &self.networks {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
    }
}

/// Waits until `addr` accepts connections (the forwarder listens on a Docker port only while a container runs).
pub async fn wait_listening(addr: SocketAddr) {
    wait_until(
        Duration::from_secs(10),
        &format!("{addr} to accept connections"),
        || async move { Ok(TcpStream::connect(addr).await.ok().map(drop)) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// One HTTP/1.0 GET through `addr`; returns the response body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!(
            "unexpected answer: {text:?}"
        ))),
    }
}

/// The server name in a test-server echo.
pub fn served_by(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["server"].as_str().unwrap_or_default().to_owned()
}

/// A Unix socket at a path of the test's choosing that relays every connection to the Docker engine's socket.
///
/// [`SocketRelay::stop`] closes the relayed connections (an event stream in progress ends) and removes the
/// socket, so clients find no engine at all; [`SocketRelay::start`] serves again. Dropping the relay stops it.
/// It runs on a thread of its own, so tests with or without a runtime of their own can use it.
#[derive(Debug)]
pub struct SocketRelay {
    path: PathBuf,
    serving: Option<Serving>,
}

/// A serving relay: its thread, and the signal that stops it.
#[derive(Debug)]
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl SocketRelay {
    /// A relay at `path` to the Docker engine, serving at once.
    pub fn new(path: &Path) -> SocketRelay {
        let mut relay = SocketRelay {
            path: path.to_path_buf(),
            serving: None,
        };
        relay.start();
        relay
    }

    /// The relay's socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds the socket and relays connections (no-op while serving); the socket exists when this returns.
    pub fn start(&mut self) {
        if self.serving.is_some() {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        let listener = std::os::unix::net::UnixListener::bind(&self.path)
            .unwrap_or_else(|e| panic!("binding {}: {e}", self.path.display()));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking relay socket");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || relay(listener, stopped));
        self.serving = Some(Serving { stop, thread });
    }

    /// Closes every relayed connection and removes the socket (no-op while stopped).
    pub fn stop(&mut self) {
        if let Some(serving) = self.serving.take() {
            let _ = serving.stop.send(());
            // The thread ends with its runtime, which drops every relayed connection.
            let _ = serving.thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The relay's thread: accepts on `listener` and copies each connection to and from the engine until `stopped`.
fn relay(
    listener: std::os::unix::net::UnixListener,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the relay's runtime");
    runtime.block_on(async move {
        let listener = UnixListener::from_std(listener).expect("the relay's socket");
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { continue };
                    connections.spawn(async move {
                        if let Ok(mut engine) = UnixStream::connect(ENGINE_SOCKET).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
}

/// Copies the test server binary out of `image` (a `FROM scratch` image with a static `/testserver`) into `dir`,
/// for process backends outside Docker. Returns its path.
pub fn testserver_from_image(image: &str, dir: &Path) -> Result<PathBuf> {
    let name = format!("tgw-extract-{}", std::process::id());
    let docker = try_docker;
    let _ = docker(&["rm", "-f", &name]);
    docker(&["create", "--name", &name, image])?;
    let dest = dir.join("testserver");
    let copied = docker(&[
        "cp",
        &format!("{name}:/testserver"),
        &dest.display().to_string(),
    ]);
    let removed = docker(&["rm", "-f", &name]);
    copied?;
    removed?;
    Ok(dest)
}
