//! The workspace's `testserver` as a backend in a lab host (HTTP/1.1 and h2c echo, TLS with its own certificate,
//! raw TCP echo), answering as a name of the test's choosing.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::binaries::workspace_binary;
use crate::lab::{Host, Lab};
use crate::process::{first_line, Process};

/// The HTTP port a [`start`]ed backend listens on, on `127.0.0.1` of its host.
pub const HTTP: u16 = 8080;
/// Its TLS port (its own self-signed certificate).
pub const TLS: u16 = 8443;
/// Its raw TCP echo port.
pub const ECHO: u16 = 9000;

/// Starts `testserver` in `host` on `127.0.0.1` ([`HTTP`], [`TLS`], [`ECHO`]),
/// answering as `name`, its log appended to `log`; returns once it listens. Listening on loopback only, it is
/// reached from outside its host only through the agent's forwarder.
pub fn start(lab: &Lab, host: Host, name: &str, log: &Path) -> Result<Process> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = lab.command(host, workspace_binary("testserver"));
    cmd.args([
        "--http",
        &format!("127.0.0.1:{HTTP}"),
        "--tls",
        &format!("127.0.0.1:{TLS}"),
        "--echo",
        &format!("127.0.0.1:{ECHO}"),
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
    let line = first_line(stdout, Duration::from_secs(20))
        .with_context(|| format!("testserver {name} in {} did not listen", host.name()))?;
    if !line.starts_with("listening ") {
        bail!(
            "testserver {name} in {} did not start (said {line:?}); see {}",
            host.name(),
            log.display()
        );
    }
    Ok(process)
}
