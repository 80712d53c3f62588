//! Programs under test: background processes that are killed when their guard drops (also while a failing test
//! unwinds), and programs run to completion with their output as text.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::wait::wait_for;

/// A background process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
}

impl Process {
    /// Starts `cmd` in the background.
    pub fn spawn(mut cmd: Command) -> Result<Process> {
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Process { child: Some(child) })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The process itself, for its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("process present until dropped or waited for")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child_mut().try_wait(), Ok(None))
    }

    /// Kills the process at once (SIGKILL, like a crash) and reaps it.
    pub fn kill(&mut self) {
        let child = self.child_mut();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit status.
    pub fn terminate(mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("process already reaped")?;
        // SAFETY: kill has no memory-safety preconditions; the pid belongs to our unreaped child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let exited = wait_for(timeout, &format!("process {} to exit", child.id()), || {
            Ok(child.try_wait()?)
        });
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        exited.with_context(|| format!("process {} ignored SIGTERM", child.id()))
    }

    /// Waits for the process to exit on its own, up to `timeout`, killing it if it does not; returns its
    /// output (stdout and stderr are only captured if the command piped them).
    pub fn wait_output(mut self, timeout: Duration) -> Result<Output> {
        let child = self.child.take().context("process already reaped")?;
        let id = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(timeout) {
            Ok(out) => Ok(out?),
            Err(_) => {
                // SAFETY: as in `terminate`.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(id as libc::pid_t, libc::SIGKILL);
                }
                bail!("process {id} did not finish within {timeout:?}")
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads the first line a program writes to `pipe` (its stdout, usually a "listening" or "ready" line), waiting at
/// most `timeout`. An empty string means the program closed the pipe without writing a line.
pub fn first_line(pipe: impl Read + Send + 'static, timeout: Duration) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(pipe).read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
    });
    match rx.recv_timeout(timeout) {
        Ok(line) => Ok(line?),
        Err(_) => bail!("no line within {timeout:?}"),
    }
}

/// What a program run to completion said and how it ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit code, -1 when a signal ended it.
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Finished {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Standard output and standard error together, for matching messages wherever the program wrote them.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion and returns its exit code and output as text; panics when it cannot be started.
pub fn run(cmd: &mut Command) -> Finished {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cmd` to completion without blocking the runtime; panics, showing its standard error, unless it exits
/// with status 0. Returns its standard output.
pub async fn stdout_of(cmd: &mut tokio::process::Command) -> String {
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
