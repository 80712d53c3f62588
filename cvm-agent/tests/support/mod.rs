//! Shared helpers for the tests against the real Docker engine: the test image, containers and networks that are
//! removed also when a test fails, and small clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use cvm_agent::docker::Discovery;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The image the tests run (built by `scripts/build-test-image.sh`).
pub const IMAGE: &str = "tee-gateway-testserver:latest";
/// Label on everything the tests create; its value is the creating process id.
pub const TEST_LABEL: &str = "tee-gateway.test";

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("running the docker CLI");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds the test image if missing or stale, and removes what crashed earlier runs left; once per process.
pub fn prepare() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-image.sh");
        let status = std::process::Command::new(&script)
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
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{TEST_LABEL}\"}}}}");
    for line in docker(&["network", "ls", "--filter", &filter, "--format", &fmt]).lines() {
        if let Some((id, pid)) = line.split_once(' ') {
            if dead(pid) {
                let _ = std::process::Command::new("docker")
                    .args(["network", "rm", id])
                    .output();
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
#[derive(Default)]
pub struct Scratch {
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Scratch {
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

    /// Creates a bridge network with a subnet of its own (so tests can pin addresses); returns its name and the
    /// first three octets of the subnet.
    pub fn network(&mut self, name: &str) -> (String, String) {
        let pid = format!("{TEST_LABEL}={}", std::process::id());
        for attempt in 0..20u32 {
            let third = (std::process::id() + attempt * 7) % 250;
            let prefix = format!("172.30.{third}");
            let subnet = format!("{prefix}.0/24");
            let ok = std::process::Command::new("docker")
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ip = self.address(name);
            if let Ok(ip) = ip.parse::<std::net::IpAddr>() {
                let addr = SocketAddr::new(ip, 8080);
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not start serving"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.containers.iter().map(String::as_str));
            let _ = std::process::Command::new("docker").args(&args).output();
        }
        for n in &self.networks {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", n])
                .output();
        }
    }
}

/// Waits until `check` holds for the discovery view, up to `timeout`.
pub async fn wait_for(
    discovery: &Discovery,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Discovery) -> bool,
) {
    let mut changes = discovery.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    while !check(discovery) {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

/// Waits until `addr` accepts connections (the forwarder listens on a Docker port only while a container runs).
pub async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} does not accept connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
