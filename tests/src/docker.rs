//! Helpers for lab tests with the real Docker engine: a relay for the engine's API socket that a test can cut and
//! restore (an engine outage as the agent sees it, without touching the engine itself), and the test server
//! binary taken out of the test image for process backends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

/// The Docker engine's API socket.
pub const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// A Unix socket at a path of the test's choosing that relays every connection to the Docker engine's socket.
///
/// [`SocketRelay::stop`] closes the relayed connections (an event stream in progress ends) and removes the
/// socket, so clients find no engine at all; [`SocketRelay::start`] serves again. Dropping the relay stops it.
pub struct SocketRelay {
    path: PathBuf,
    target: PathBuf,
    runtime: tokio::runtime::Runtime,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl SocketRelay {
    /// A relay at `path` to the Docker engine, serving at once.
    pub fn new(path: &Path) -> Result<SocketRelay> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("building the relay's runtime")?;
        let mut relay = SocketRelay {
            path: path.to_path_buf(),
            target: PathBuf::from(ENGINE_SOCKET),
            runtime,
            serving: None,
        };
        relay.start()?;
        Ok(relay)
    }

    /// The relay's socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the relay serves now.
    pub fn is_serving(&self) -> bool {
        self.serving.is_some()
    }

    /// Binds the socket and relays connections (no-op while serving).
    pub fn start(&mut self) -> Result<()> {
        if self.serving.is_some() {
            return Ok(());
        }
        let _ = std::fs::remove_file(&self.path);
        let listener = {
            let _guard = self.runtime.enter();
            UnixListener::bind(&self.path)
                .with_context(|| format!("binding {}", self.path.display()))?
        };
        let target = self.target.clone();
        self.serving = Some(self.runtime.spawn(async move {
            // Owned here: aborting the task drops the set, which aborts every relayed connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let target = target.clone();
                        connections.spawn(async move {
                            if let Ok(mut engine) = UnixStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
        Ok(())
    }

    /// Closes every relayed connection and removes the socket (no-op while stopped).
    pub fn stop(&mut self) {
        if let Some(task) = self.serving.take() {
            task.abort();
            // Wait for the abort so no connection outlives this call.
            let _ = self.runtime.block_on(task);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies the test server binary out of `image` (a `FROM scratch` image with a static `/testserver`) into `dir`,
/// for process backends outside Docker. Returns its path.
pub fn testserver_from_image(image: &str, dir: &Path) -> Result<PathBuf> {
    let name = format!("tgw-extract-{}", std::process::id());
    let docker = |args: &[&str]| -> Result<String> {
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
    };
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
