//! Pieces for running the gateway's data plane as real processes in the lab: the workspace's binaries, a web PKI
//! made with `openssl`, `testserver` backends, curl driven from a lab host, firewall rules that blackhole traffic
//! inside one host (removed when their guard drops), and reading Prometheus text.
//!
//! ```no_run
//! use tee_gateway_tests::{stack, Host, Lab};
//! let lab = Lab::up().unwrap();
//! let dir = std::env::temp_dir().join("example");
//! let server = stack::start_testserver(&lab, Host::Cvm1, "cvm1", &dir.join("cvm1.log")).unwrap();
//! let _hole = stack::NftDrop::input(Host::Cvm1, "udp sport 51820").unwrap();
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{Host, Lab, Process};

/// The ports a [`start_testserver`] backend listens on, on `127.0.0.1` of its host.
pub const TESTSERVER_HTTP: u16 = 8080;
/// The testserver's TLS port (its own self-signed certificate).
pub const TESTSERVER_TLS: u16 = 8443;
/// The testserver's raw TCP echo port.
pub const TESTSERVER_ECHO: u16 = 9000;

/// The binaries the lab stack runs, built together by [`workspace_binary`] when one is missing.
const STACK_BINARIES: [&str; 3] = ["gateway", "cvm-agent", "testserver"];

/// A binary of this workspace, next to the running test's directory (`target/<profile>/NAME`). When one of the
/// stack's binaries is missing, they are built first (`cargo build -p gateway -p cvm-agent -p testserver`); a
/// binary left over from an older build is used as it is, so build them after changing their code.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary has no target directory")?;
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built && STACK_BINARIES.iter().any(|b| !dir.join(b).exists()) {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("build");
        for b in STACK_BINARIES {
            cmd.args(["-p", b]);
        }
        let status = cmd.arg("--bins").status().context("running cargo build")?;
        if !status.success() {
            bail!("building {STACK_BINARIES:?} failed");
        }
    }
    *built = true;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} is missing", path.display());
    }
    Ok(path)
}

/// The path of a file in this repository (relative to its root).
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A certificate authority made with `openssl`, issuing server certificates (ECDSA P-256).
#[derive(Debug)]
pub struct WebPki {
    dir: PathBuf,
    /// The CA certificate (PEM), for clients to trust.
    pub ca_pem: PathBuf,
    ca_key: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl WebPki {
    /// A new CA whose files live in `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<WebPki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_pem = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tee-gateway lab CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
            &ca_key.display().to_string(),
            "-out",
            &ca_pem.display().to_string(),
        ])?;
        Ok(WebPki {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_key,
        })
    }

    /// Issues a server certificate `file`.pem / `file`.key with common name `cn` for the DNS names `names`.
    pub fn issue(&self, file: &str, cn: &str, names: &[&str]) -> Result<CertFiles> {
        let key = self.dir.join(format!("{file}.key"));
        let csr = self.dir.join(format!("{file}.csr"));
        let cert = self.dir.join(format!("{file}.pem"));
        let ext = self.dir.join(format!("{file}.ext"));
        let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key.display().to_string(),
            "-out",
            &csr.display().to_string(),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr.display().to_string(),
            "-CA",
            &self.ca_pem.display().to_string(),
            "-CAkey",
            &self.ca_key.display().to_string(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ])?;
        Ok(CertFiles { cert, key })
    }
}

/// Starts `testserver` in `host` on `127.0.0.1` ([`TESTSERVER_HTTP`], [`TESTSERVER_TLS`], [`TESTSERVER_ECHO`]),
/// answering as `name`, its log appended to `log`; returns once it listens. Listening on loopback only, it is
/// reached from outside its host only through the agent's forwarder.
pub fn start_testserver(lab: &Lab, host: Host, name: &str, log: &Path) -> Result<Process> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = lab.command(host, workspace_binary("testserver")?);
    cmd.args([
        "--http",
        &format!("127.0.0.1:{TESTSERVER_HTTP}"),
        "--tls",
        &format!("127.0.0.1:{TESTSERVER_TLS}"),
        "--echo",
        &format!("127.0.0.1:{TESTSERVER_ECHO}"),
        "--name",
        name,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(log_file);
    let mut process = lab.spawn(cmd)?;
    let stdout = process
        .child_mut()
        .stdout
        .take()
        .context("testserver stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) if line.starts_with("listening ") => Ok(process),
        Ok(line) => bail!(
            "testserver {name} in {} did not start (said {line:?}); see {}",
            host.name(),
            log.display()
        ),
        Err(_) => bail!(
            "testserver {name} in {} did not listen within 20 s",
            host.name()
        ),
    }
}

/// An nftables table in one lab host that drops matching incoming packets; deleted when dropped.
#[derive(Debug)]
pub struct NftDrop {
    host: Host,
    table: String,
}

impl NftDrop {
    /// Drops packets entering `host` that match `rule` (nft syntax, for example `udp sport 51820`).
    pub fn input(host: Host, rule: &str) -> Result<NftDrop> {
        let table = format!("tg_drop_{}", std::process::id());
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} input {{ type filter hook input priority -10; policy accept; }}\n\
             add rule inet {table} input {rule} counter drop\n"
        );
        let guard = NftDrop { host, table };
        let out = guard
            .nft(&["-f", "-"], Some(&script))
            .context("adding the drop rule")?;
        if !out.status.success() {
            bail!(
                "nft in {}: {}",
                host.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(guard)
    }

    fn nft(&self, args: &[&str], stdin: Option<&str>) -> std::io::Result<std::process::Output> {
        use std::io::Write;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.host.name(), "nft"])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    }

    /// How many packets the rule dropped so far.
    pub fn dropped_packets(&self) -> Result<u64> {
        let out = self.nft(&["list", "table", "inet", &self.table], None)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let n = text
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .context("no packet counter in the drop table")?;
        Ok(n.parse()?)
    }
}

impl Drop for NftDrop {
    fn drop(&mut self) {
        match self.nft(&["delete", "table", "inet", &self.table], None) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "removing nft table {} in {}: {}",
                self.table,
                self.host.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("removing nft table {}: {e}", self.table),
        }
    }
}

/// One curl transfer's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// HTTP status, 0 when the transfer failed.
    pub code: u16,
    /// The `x-served-by` response header (the testserver's name), empty when absent.
    pub served_by: String,
    /// Total time of the transfer, seconds.
    pub seconds: f64,
    /// curl's error message for a failed transfer, empty otherwise.
    pub error: String,
}

/// Clients in one lab host reaching HTTPS names through one gateway address (`curl --resolve`), trusting `ca`.
#[derive(Debug)]
pub struct HttpsClient<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// Where the clients run.
    pub host: Host,
    /// The gateway's client listener.
    pub gateway: std::net::SocketAddr,
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// A directory for curl's configuration files.
    pub scratch: PathBuf,
}

impl HttpsClient<'_> {
    fn curl(&self, name: &str) -> Command {
        let mut cmd = self.lab.command(self.host, "curl");
        cmd.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.ca)
            .args([
                "--resolve",
                &format!("{name}:{}:{}", self.gateway.port(), self.gateway.ip()),
            ])
            .stdin(Stdio::null());
        cmd
    }

    /// The URL of `path` on `name` through the gateway.
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("https://{name}:{}{path}", self.gateway.port())
    }

    /// One GET of `path` on `name` with extra curl arguments; returns curl's output whatever its exit status.
    pub fn get(&self, name: &str, path: &str, extra: &[&str]) -> Result<std::process::Output> {
        self.curl(name)
            .args(extra)
            .arg(self.url(name, path))
            .output()
            .context("running curl")
    }

    /// One GET that must succeed with status 200; returns the body.
    pub fn get_ok(&self, name: &str, path: &str) -> Result<String> {
        let out = self.get(name, path, &["--fail"])?;
        if !out.status.success() {
            bail!(
                "GET {}: {}",
                self.url(name, path),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `n` GETs of `path` on `name`, each on a new connection, `parallel` at a time, in one curl process.
    /// Failed transfers are returned with code 0, not as an error.
    pub fn many(&self, name: &str, path: &str, n: usize, parallel: usize) -> Result<Vec<Transfer>> {
        let cfg = self.scratch.join(format!("curl-{name}-{n}.cfg"));
        let url = self.url(name, path);
        let mut text = String::with_capacity(n * (url.len() + 40));
        for _ in 0..n {
            text.push_str(&format!("url = \"{url}\"\noutput = \"/dev/null\"\n"));
        }
        std::fs::write(&cfg, text)?;
        let out = self
            .curl(name)
            .args([
                "--parallel",
                "--parallel-immediate",
                "--parallel-max",
                &parallel.to_string(),
                "-H",
                "Connection: close",
                "-w",
                "%{http_code} %header{x-served-by} %{time_total} %{errormsg}\\n",
                "-K",
            ])
            .arg(&cfg)
            .output()
            .context("running curl")?;
        let transfers: Vec<Transfer> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let mut parts = line.split(' ');
                let code = parts.next().unwrap_or("0").parse().unwrap_or(0);
                let served_by = parts.next().unwrap_or("").to_owned();
                let seconds = parts.next().unwrap_or("0").parse().unwrap_or(0.0);
                let error = parts.collect::<Vec<_>>().join(" ");
                Transfer {
                    code,
                    served_by,
                    seconds,
                    error,
                }
            })
            .collect();
        if transfers.len() != n {
            bail!(
                "curl reported {} of {n} transfers: {}",
                transfers.len(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(transfers)
    }
}

/// The distinct error messages of the failed transfers, with their counts.
pub fn failures(transfers: &[Transfer]) -> std::collections::BTreeMap<String, usize> {
    let mut errors = std::collections::BTreeMap::new();
    for t in transfers.iter().filter(|t| t.code != 200) {
        *errors.entry(format!("{} {}", t.code, t.error)).or_insert(0) += 1;
    }
    errors
}

/// How many transfers each server answered (by `x-served-by`), and how many failed (key `""`).
pub fn tally(transfers: &[Transfer]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for t in transfers {
        let key = if t.code == 200 {
            t.served_by.clone()
        } else {
            String::new()
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// The value of one series in Prometheus text, `series` written as it appears (name and labels).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_finds_exact_series_only() {
        let text = "# HELP x y\nx_total{a=\"1\"} 3\nx_total{a=\"10\"} 7\nh_bucket{le=\"0.5\"} 40\n";
        assert_eq!(metric(text, "x_total{a=\"1\"}"), Some(3.0));
        assert_eq!(metric(text, "x_total{a=\"10\"}"), Some(7.0));
        assert_eq!(metric(text, "h_bucket{le=\"0.5\"}"), Some(40.0));
        assert_eq!(metric(text, "x_total"), None);
    }
}
