//! Packet filters inside one lab host: an nftables table that drops matching packets (a blackholed peer, a
//! blocked tunnel port), removed when its guard drops.
//!
//! ```no_run
//! use test_support::{firewall::NftDrop, Host, Lab};
//! let _lab = Lab::up().unwrap();
//! let _hole = NftDrop::input(Host::Cvm1, "udp sport 51820").unwrap();
//! ```

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use crate::lab::Host;

/// An nftables table in one lab host that drops matching incoming packets; deleted when dropped.
#[derive(Debug)]
pub struct NftDrop {
    host: Host,
    table: String,
}

impl NftDrop {
    /// Drops packets entering `host` that match `rule` (nft syntax, for example `udp sport 51820`).
    pub fn input(host: Host, rule: &str) -> Result<NftDrop> {
        NftDrop::new(host, &[("input", rule)])
    }

    /// Drops every UDP packet to and from `port` in `host` (leaving and entering it).
    pub fn udp_port(host: Host, port: u16) -> Result<NftDrop> {
        NftDrop::new(
            host,
            &[
                ("output", &format!("udp dport {port}")),
                ("input", &format!("udp sport {port}")),
            ],
        )
    }

    /// A table with one chain per `(hook, rule)` that drops (and counts) what matches `rule`.
    fn new(host: Host, rules: &[(&str, &str)]) -> Result<NftDrop> {
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "tg_drop_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut script = format!("add table inet {table}\n");
        for (hook, rule) in rules {
            script += &format!(
                "add chain inet {table} {hook} {{ type filter hook {hook} priority -10; policy accept; }}\n\
                 add rule inet {table} {hook} {rule} counter drop\n"
            );
        }
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

    /// How many packets the (first) rule dropped so far.
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
