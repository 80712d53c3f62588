//! Real clients run inside lab hosts: curl reaching HTTPS names through the gateway, `openssl s_client`, Python
//! scripts of the repository, and one-line TCP probes; and reading Prometheus text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::binaries::repo_file;
use crate::lab::{Host, Lab};
use crate::process::Process;

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

    /// One GET that must succeed, with curl's `-w FORMAT` output written after the body; returns the body and what
    /// `format` wrote.
    pub fn get_written(&self, name: &str, path: &str, format: &str) -> Result<(String, String)> {
        let out = self.get(name, path, &["--fail", "-w", &format!("\n{format}")])?;
        if !out.status.success() {
            bail!(
                "GET {}: {}",
                self.url(name, path),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, written) = text
            .rsplit_once('\n')
            .with_context(|| format!("no -w output in {text:?}"))?;
        Ok((body.to_owned(), written.to_owned()))
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

/// curl's arguments for one admin API request, `method` on `url` with the bearer `token` if any; curl writes the
/// status after the body, and [`admin_answer`] reads both back.
pub fn admin_args(method: &str, url: &str, token: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "-sS",
        "--max-time",
        "5",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]
    .map(String::from)
    .into();
    if let Some(token) = token {
        args.extend(["-H".to_owned(), format!("Authorization: Bearer {token}")]);
    }
    args.push(url.to_owned());
    args
}

/// The status and body of an admin API request curl made with [`admin_args`].
pub fn admin_answer(out: &std::process::Output) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').with_context(|| {
        format!(
            "no status in curl's output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("curl wrote status {code:?}"))?;
    Ok((code, body.to_owned()))
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

/// Connects from `host` to `addr:port` with Python (5 s timeout); returns the outcome (`connected`, or the
/// exception's name: `ConnectionRefusedError`, `TimeoutError`, ...) and the seconds the attempt itself took.
pub fn connect_outcome(lab: &Lab, host: Host, addr: &str, port: u16) -> Result<(String, f64)> {
    let script = format!(
        "import socket,time\nt=time.monotonic()\ntry:\n  socket.create_connection(('{addr}',{port}),timeout=5)\n  \
         r='connected'\nexcept OSError as e:\n  r=type(e).__name__\nprint(r, time.monotonic()-t)\n"
    );
    let out = lab
        .command(host, "python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (outcome, secs) = text.trim().split_once(' ').with_context(|| {
        format!(
            "connect script: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((outcome.to_owned(), secs.parse()?))
}

/// Connects from `host` to `addr:port` and returns the first line answered (see [`start_line_server`]).
pub fn fetch_line(lab: &Lab, host: Host, addr: &str, port: u16) -> Result<String> {
    let script = format!(
        "import socket\ns=socket.create_connection(('{addr}',{port}),timeout=3)\nprint(s.makefile().readline().strip())\n"
    );
    let out = lab
        .command(host, "python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "connecting to {addr}:{port} from {}: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts a TCP server in `host` on `127.0.0.1:port` that answers each connection with the line `reply` and closes
/// it. Listening on loopback only, it is reached from outside its host only through an agent's forwarder.
pub fn start_line_server(lab: &Lab, host: Host, port: u16, reply: &str) -> Result<Process> {
    start_line_server_on(lab, host, "127.0.0.1", port, reply)
}

/// The same server as [`start_line_server`], listening on `bind:port` (`0.0.0.0`: every address of `host`).
pub fn start_line_server_on(
    lab: &Lab,
    host: Host,
    bind: &str,
    port: u16,
    reply: &str,
) -> Result<Process> {
    let script = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{bind}',{port}))\ns.listen(16)\nwhile True:\n  c,_=s.accept()\n  c.sendall(b'{reply}\\n')\n  c.close()\n"
    );
    spawn_python(lab, host, &script)
}

/// Starts the Python program `script` in `host`, its standard input and output closed, as a process that ends
/// when dropped.
pub fn spawn_python(lab: &Lab, host: Host, script: &str) -> Result<Process> {
    let mut cmd = lab.command(host, "python3");
    cmd.args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn(cmd)
}

/// A Python script of the repository (`relative` to its root) with `args`, as a command in `host`.
pub fn python_command(lab: &Lab, host: Host, relative: &str, args: &[&str]) -> Command {
    let mut cmd = lab.command(host, "python3");
    cmd.arg(repo_file(relative)).args(args).stdin(Stdio::null());
    cmd
}

/// Runs a Python script of the repository in `host`; returns its stdout, failing with its stderr.
pub fn python(lab: &Lab, host: Host, relative: &str, args: &[&str]) -> Result<String> {
    let out = python_command(lab, host, relative, args).output()?;
    if !out.status.success() {
        bail!(
            "{relative} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The certificate (PEM) `openssl s_client` in `host` is shown when it connects to `connect` with SNI `name`, and
/// the whole output; `extra` are more `s_client` arguments (for example `-verify_return_error -CAfile FILE`).
pub fn presented_certificate(
    lab: &Lab,
    host: Host,
    connect: SocketAddr,
    name: &str,
    extra: &[&str],
) -> Result<(String, String)> {
    let out = lab
        .command(host, "openssl")
        .args([
            "s_client",
            "-connect",
            &connect.to_string(),
            "-servername",
            name,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let begin = text.find("-----BEGIN CERTIFICATE-----").with_context(|| {
        format!(
            "no certificate in: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let end_marker = "-----END CERTIFICATE-----";
    let end =
        text[begin..].find(end_marker).context("unterminated PEM")? + begin + end_marker.len();
    Ok((text[begin..end].to_owned(), text))
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
