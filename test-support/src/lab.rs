//! The network-namespace lab of `scripts/lab.sh`: its hosts, and commands run inside them.
//!
//! A test takes the lab with [`Lab::up`]. The returned guard holds an exclusive `flock` on
//! [`LAB_LOCK_PATH`] for its whole life, so tests in parallel threads, in other test binaries or run by other
//! people on the same machine never share the lab; it starts from a freshly built lab (whatever a crashed
//! earlier run left behind is removed first) and runs `lab.sh down` when dropped, also while a failing test
//! unwinds. Processes started with [`Lab::spawn`] are killed when their [`Process`] guard drops, and
//! `lab.sh down` kills anything still running inside a lab host. Tests that take the lab need root: they are
//! marked `#[ignore = "needs root and the lab: ..."]` and run with `--include-ignored`.
//!
//! ```no_run
//! use test_support::{Host, Lab};
//! let lab = Lab::up().unwrap();
//! lab.run(Host::Client, &["ping", "-c1", "gateway"]).unwrap();
//! ```

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::binaries::repo_file;
use crate::process::Process;
use crate::wait::wait_for;

/// The lock file whose exclusive `flock` a [`Lab`] holds for its lifetime.
pub const LAB_LOCK_PATH: &str = "/run/tee-gateway-lab.lock";

/// A host of the lab. Each one but [`Host::Root`] is a network namespace of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// The gateway's host, `198.18.0.1`.
    Gateway,
    /// The first CVM, `198.18.0.11`.
    Cvm1,
    /// The second CVM, `198.18.0.12`.
    Cvm2,
    /// The third CVM, `198.18.0.13`.
    Cvm3,
    /// The client's host, `198.18.0.100`.
    Client,
    /// The root namespace (where the Docker engine runs), joined to the lab bridge as `198.18.0.254`.
    Root,
}

impl Host {
    /// Every namespaced host of the lab (all but [`Host::Root`]).
    pub const NAMESPACED: [Host; 5] = [
        Host::Gateway,
        Host::Cvm1,
        Host::Cvm2,
        Host::Cvm3,
        Host::Client,
    ];

    /// The host's name: its namespace name and the name it resolves as inside the lab.
    pub fn name(self) -> &'static str {
        match self {
            Host::Gateway => "gateway",
            Host::Cvm1 => "cvm1",
            Host::Cvm2 => "cvm2",
            Host::Cvm3 => "cvm3",
            Host::Client => "client",
            Host::Root => "root",
        }
    }

    /// The host's address on the lab bridge (the lab's /24 in 198.18.0.0/15).
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Host::Gateway => Ipv4Addr::new(198, 18, 0, 1),
            Host::Cvm1 => Ipv4Addr::new(198, 18, 0, 11),
            Host::Cvm2 => Ipv4Addr::new(198, 18, 0, 12),
            Host::Cvm3 => Ipv4Addr::new(198, 18, 0, 13),
            Host::Client => Ipv4Addr::new(198, 18, 0, 100),
            Host::Root => Ipv4Addr::new(198, 18, 0, 254),
        }
    }
}

/// The path of `scripts/lab.sh` in this source tree.
pub fn lab_script() -> PathBuf {
    repo_file("scripts/lab.sh")
}

/// Exclusive use of a freshly built lab; tears the lab down on drop.
#[derive(Debug)]
pub struct Lab {
    // Held only for its lock; closing it on drop releases the flock.
    _lock: File,
    script: PathBuf,
}

impl Lab {
    /// Waits for exclusive use of the lab, then builds it from scratch (removing whatever an earlier,
    /// crashed run left behind). Fails with a clear message when not run as root.
    pub fn up() -> Result<Lab> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[allow(unsafe_code)]
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            bail!("the lab tests need root (network namespaces, TUN devices): run them as root");
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LAB_LOCK_PATH)
            .with_context(|| format!("opening the lab lock {LAB_LOCK_PATH}"))?;
        flock_exclusive(&lock)?;
        let lab = Lab {
            _lock: lock,
            script: lab_script(),
        };
        lab.script_cmd(&["down"])?;
        lab.script_cmd(&["up"])?;
        Ok(lab)
    }

    fn script_cmd(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            bail!(
                "lab.sh {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Tears the lab down now while keeping exclusive use of it (dropping the guard later runs `lab.sh down`
    /// again, which is harmless): lets a test check the teardown before anyone else can rebuild the lab.
    pub fn down_now(&self) -> Result<()> {
        self.script_cmd(&["down"])
    }

    /// A command that runs `program` inside `host` (directly for [`Host::Root`]). Add arguments, then run
    /// it with [`Command::output`] or [`Lab::spawn`].
    pub fn command(&self, host: Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match host {
            Host::Root => Command::new(program),
            _ => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", host.name()]).arg(program);
                cmd
            }
        }
    }

    /// Runs `argv` inside `host` to completion and returns its output; fails (with its stderr) when it exits
    /// unsuccessfully.
    pub fn run(&self, host: Host, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("empty command line")?;
        let out = self
            .command(host, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} in {}", host.name()))?;
        if !out.status.success() {
            bail!(
                "{argv:?} in {} failed ({}): {}{}",
                host.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out)
    }

    /// Runs `argv` inside `host` and reports only whether it exited successfully.
    pub fn succeeds(&self, host: Host, argv: &[&str]) -> bool {
        self.run(host, argv).is_ok()
    }

    /// Starts `cmd` (usually from [`Lab::command`]) in the background; the process is killed when the returned
    /// guard drops.
    pub fn spawn(&self, cmd: Command) -> Result<Process> {
        Process::spawn(cmd)
    }
}

impl Lab {
    /// The IPv4 address of `interface` inside `host` once it has one (an agent's tunnel device appears with its
    /// address after registration); waits at most `timeout`.
    pub fn interface_address(
        &self,
        host: Host,
        interface: &str,
        timeout: Duration,
    ) -> Result<String> {
        wait_for(timeout, &format!("{interface} in {}", host.name()), || {
            let out = self
                .command(host, "ip")
                .args(["-o", "-4", "addr", "show", "dev", interface])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(text
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|cidr| cidr.split('/').next())
                .map(str::to_owned))
        })
    }

    /// Whether `interface` exists inside `host`.
    pub fn has_interface(&self, host: Host, interface: &str) -> bool {
        self.succeeds(host, &["ip", "link", "show", interface])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.script_cmd(&["down"]) {
            eprintln!("tearing down the lab: {e:#}");
        }
    }
}

fn flock_exclusive(file: &File) -> Result<()> {
    loop {
        // SAFETY: the descriptor is valid for the life of `file`; flock has no memory-safety preconditions.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).with_context(|| format!("locking {LAB_LOCK_PATH}"));
        }
    }
}
