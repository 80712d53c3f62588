//! Tunnel peers in lab hosts: key files, the `tunnel-endpoint` binary driven over its stdin/stdout, a
//! `wireguard-go` peer configured with `wg`, and a TCP transfer checked by SHA-256 at both ends.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use protocol::tunnel::{PrivateKey, PublicKey};
use serde_json::Value;

use crate::binaries::repo_file;
use crate::lab::{Host, Lab};
use crate::process::Process;
use crate::scratch::Scratch;

/// A WireGuard key pair whose private key is also written to a file (mode 0600) for the programs under test.
#[derive(Debug)]
pub struct KeyPair {
    /// The private key.
    pub private: PrivateKey,
    /// The public key.
    pub public: PublicKey,
    /// A file holding the private key in base64.
    pub file: PathBuf,
}

impl KeyPair {
    /// A fresh key pair, its private key written into `dir` as `name.key`.
    pub fn generate(dir: &Scratch, name: &str) -> Result<KeyPair> {
        use std::os::unix::fs::OpenOptionsExt;
        let private = PrivateKey::generate();
        let file = dir.path(&format!("{name}.key"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&file)?;
        writeln!(f, "{}", private.to_base64())?;
        Ok(KeyPair {
            public: private.public_key(),
            private,
            file,
        })
    }
}

/// The gateway's address inside the tunnel, in the tunnel tests.
pub const GATEWAY_IP: &str = "10.0.0.1";
/// Where CVMs reach the gateway's WireGuard endpoint across the lab.
pub const GATEWAY_ENDPOINT: &str = "198.18.0.1:51820";

/// The `tunnel-endpoint` binary running in a lab host, driven by commands on its stdin.
#[derive(Debug)]
pub struct EndpointProc {
    /// Where it runs.
    pub host: Host,
    /// Its public key.
    pub public_key: PublicKey,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    process: Process,
}

impl EndpointProc {
    /// Starts `binary` in `host` with `args` (after `--private-key-file`), and waits for its ready line.
    pub fn start(
        lab: &Lab,
        host: Host,
        binary: &Path,
        key: &KeyPair,
        args: &[String],
    ) -> Result<Self> {
        let mut cmd = lab.command(host, binary);
        cmd.arg("--private-key-file")
            .arg(&key.file)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut process = lab.spawn(cmd)?;
        let stdin = process.child_mut().stdin.take().context("endpoint stdin")?;
        let stdout = BufReader::new(
            process
                .child_mut()
                .stdout
                .take()
                .context("endpoint stdout")?,
        );
        let mut ep = EndpointProc {
            host,
            public_key: key.public,
            stdin,
            stdout,
            process,
        };
        let ready = ep.read_line().context("endpoint did not start")?;
        let announced: PublicKey = ready["public_key"]
            .as_str()
            .context("ready line without public_key")?
            .parse()?;
        if announced != key.public {
            bail!("endpoint announced {announced}, expected {}", key.public);
        }
        Ok(ep)
    }

    /// Starts `binary` in `host` with TUN device `tun`, tunnel address `address` (`10.0.0.N/24`) and `more`
    /// arguments (peers, timers, filters).
    pub fn start_on(
        lab: &Lab,
        host: Host,
        binary: &Path,
        key: &KeyPair,
        (tun, address): (&str, &str),
        more: &[String],
    ) -> Result<Self> {
        let mut args = vec![format!("--address={address}"), format!("--tun-name={tun}")];
        args.extend_from_slice(more);
        Self::start(lab, host, binary, key, &args)
    }

    fn read_line(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.process.child_mut().try_wait()?;
            bail!("endpoint in {} exited ({status:?})", self.host.name());
        }
        serde_json::from_str(&line).with_context(|| format!("endpoint answered {line:?}"))
    }

    /// Sends one command line and returns the JSON answer; an `{"error"}` answer becomes an `Err`.
    pub fn command(&mut self, line: &str) -> Result<Value> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        let answer = self.read_line()?;
        if let Some(e) = answer.get("error") {
            bail!("endpoint refused {line:?}: {e}");
        }
        Ok(answer)
    }

    /// The endpoint's whole stats snapshot.
    pub fn stats(&mut self) -> Result<Value> {
        self.command("stats")
    }

    /// One peer's snapshot.
    pub fn peer(&mut self, key: &PublicKey) -> Result<Value> {
        let stats = self.stats()?;
        stats["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["public_key"] == key.to_string()))
            .cloned()
            .with_context(|| format!("no peer {key} in {stats}"))
    }

    /// Stops the endpoint with SIGTERM and checks it exits cleanly.
    pub fn stop(self) -> Result<()> {
        let status = self.process.terminate(Duration::from_secs(5))?;
        if !status.success() {
            bail!("endpoint exited with {status}");
        }
        Ok(())
    }
}

/// The smallest tunnel: our endpoint in the gateway host at [`GATEWAY_IP`] and one in `cvm1` at `10.0.0.2`, each
/// the other's only peer (the CVM knows where the gateway is), on TUN devices named `tun`.
#[derive(Debug)]
pub struct Pair {
    /// The gateway's endpoint.
    pub gw: EndpointProc,
    /// The CVM's endpoint.
    pub cvm: EndpointProc,
    /// The gateway's keys.
    pub gw_key: KeyPair,
    /// The CVM's keys.
    pub cvm_key: KeyPair,
}

impl Pair {
    /// Starts both endpoints of `binary`, their keys in `dir`; `cvm_flags` are more arguments of the CVM's.
    pub fn start(
        lab: &Lab,
        binary: &Path,
        dir: &Scratch,
        tun: &str,
        cvm_flags: &[String],
    ) -> Result<Pair> {
        let gw_key = KeyPair::generate(dir, "gateway")?;
        let cvm_key = KeyPair::generate(dir, "cvm1")?;
        let gw = EndpointProc::start_on(
            lab,
            Host::Gateway,
            binary,
            &gw_key,
            (tun, "10.0.0.1/24"),
            &[peer_arg(&cvm_key.public, "10.0.0.2", &[])],
        )?;
        let mut args = cvm_flags.to_vec();
        args.push(gateway_peer_arg(&gw_key.public, &[]));
        let cvm = EndpointProc::start_on(
            lab,
            Host::Cvm1,
            binary,
            &cvm_key,
            (tun, "10.0.0.2/24"),
            &args,
        )?;
        Ok(Pair {
            gw,
            cvm,
            gw_key,
            cvm_key,
        })
    }
}

/// A `wireguard-go` interface in a lab host, configured with `wg`; stopped (SIGTERM) on drop.
#[derive(Debug)]
pub struct WireguardGo {
    /// Where it runs.
    pub host: Host,
    /// The interface name (unique on the machine: `wireguard-go` keeps its control sockets in one directory).
    pub ifname: String,
    process: Option<Process>,
}

impl WireguardGo {
    /// Starts `wireguard-go` in `host` with `key`, listening on `listen_port`, with tunnel address
    /// `address` (e.g. `10.0.0.2/24`), and waits until its control socket answers.
    pub fn start(
        lab: &Lab,
        host: Host,
        key: &KeyPair,
        listen_port: u16,
        address: &str,
    ) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let ifname = format!(
            "wgt{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = lab.command(host, "wireguard-go");
        cmd.args(["-f", &ifname])
            .env("LOG_LEVEL", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = lab.spawn(cmd)?;
        let wg = WireguardGo {
            host,
            ifname,
            process: Some(process),
        };
        crate::wait_for(
            Duration::from_secs(5),
            "wireguard-go's control socket",
            || {
                Ok(lab
                    .succeeds(host, &["wg", "show", &wg.ifname])
                    .then_some(()))
            },
        )?;
        let key_file = key.file.to_string_lossy();
        let port = listen_port.to_string();
        lab.run(
            host,
            &[
                "wg",
                "set",
                &wg.ifname,
                "private-key",
                &key_file,
                "listen-port",
                &port,
            ],
        )?;
        lab.run(host, &["ip", "addr", "add", address, "dev", &wg.ifname])?;
        lab.run(host, &["ip", "link", "set", &wg.ifname, "up"])?;
        Ok(wg)
    }

    /// Adds a peer with `wg set ... peer KEY allowed-ips IP/32 [endpoint ADDR]`.
    pub fn add_peer(
        &self,
        lab: &Lab,
        key: &PublicKey,
        allowed_ip: &str,
        endpoint: Option<&str>,
    ) -> Result<()> {
        let key = key.to_string();
        let allowed = format!("{allowed_ip}/32");
        let mut argv = vec![
            "wg",
            "set",
            &self.ifname,
            "peer",
            &key,
            "allowed-ips",
            &allowed,
        ];
        if let Some(e) = endpoint {
            argv.extend(["endpoint", e]);
        }
        lab.run(self.host, &argv)?;
        Ok(())
    }

    /// Seconds since the Unix epoch of each peer's latest handshake (0: none), from `wg show`.
    pub fn latest_handshakes(&self, lab: &Lab) -> Result<Vec<(String, u64)>> {
        let out = lab.run(
            self.host,
            &["wg", "show", &self.ifname, "latest-handshakes"],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, t) = l.split_once('\t')?;
                Some((k.to_string(), t.trim().parse().ok()?))
            })
            .collect())
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            let _ = p.terminate(Duration::from_secs(3));
        }
    }
}

/// The path of `tests/tools/tcp_hash.py`.
pub fn tcp_hash_tool() -> PathBuf {
    repo_file("tests/tools/tcp_hash.py")
}

/// Sends `bytes` pseudo-random bytes over TCP from `client` to `server_addr:port` (a listener started in
/// `server`), and checks that both ends count the same number of bytes with the same SHA-256.
pub fn tcp_transfer(
    lab: &Lab,
    server: Host,
    client: Host,
    server_addr: &str,
    port: u16,
    bytes: u64,
) -> Result<()> {
    let tool = tcp_hash_tool();
    let mut recv = lab.command(server, "python3");
    recv.arg(&tool)
        .args(["recv", &port.to_string(), "30"])
        .stdout(Stdio::piped());
    let mut receiver = lab.spawn(recv)?;
    let mut out = BufReader::new(
        receiver
            .child_mut()
            .stdout
            .take()
            .context("receiver stdout")?,
    );
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.contains("listening") {
        bail!("receiver did not start: {line:?}");
    }
    let sent = lab.run(
        client,
        &[
            "python3",
            &tool.to_string_lossy(),
            "send",
            server_addr,
            &port.to_string(),
            &bytes.to_string(),
        ],
    )?;
    let sent: Value = serde_json::from_slice(&sent.stdout).context("sender output")?;
    line.clear();
    out.read_line(&mut line)?;
    let received: Value =
        serde_json::from_str(&line).with_context(|| format!("receiver output {line:?}"))?;
    drop(receiver);
    if sent["bytes"].as_u64() != Some(bytes) {
        bail!("sender sent {} of {bytes} bytes", sent["bytes"]);
    }
    if received["bytes"] != sent["bytes"] || received["sha256"] != sent["sha256"] {
        bail!("transfer corrupted: sent {sent}, received {received}");
    }
    Ok(())
}

/// Whether `ping -c COUNT` from `host` to `addr` gets every answer (interval 0.2 s, 1 s deadline per reply).
pub fn ping(lab: &Lab, host: Host, addr: &str, count: u32) -> bool {
    lab.succeeds(
        host,
        &[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "-q",
            addr,
        ],
    )
}

/// The `--peer` argument of `tunnel-endpoint` for `key` at tunnel address `ip`, with optional extra fields
/// (`endpoint=HOST:PORT`, `keepalive-ms=N`).
pub fn peer_arg(key: &PublicKey, ip: &str, extra: &[&str]) -> String {
    let mut arg = format!("--peer=key={key},ip={ip}");
    for e in extra {
        arg.push(',');
        arg.push_str(e);
    }
    arg
}

/// The `--peer` argument a CVM's endpoint gets for the gateway's (`key` at [`GATEWAY_IP`], reached at
/// [`GATEWAY_ENDPOINT`]), with optional extra fields.
pub fn gateway_peer_arg(key: &PublicKey, extra: &[&str]) -> String {
    let endpoint = format!("endpoint={GATEWAY_ENDPOINT}");
    peer_arg(key, GATEWAY_IP, &[&[endpoint.as_str()], extra].concat())
}

/// Reads a counter from a JSON snapshot, failing the test readably when it is missing.
pub fn counter(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("no counter {path:?} in {v}"))
}
