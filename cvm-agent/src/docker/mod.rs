//! Container discovery through the Docker Engine API (`bollard`).
//!
//! A [`DiscoveryTask`] keeps an up-to-date view of the running containers: it lists them, then follows the
//! engine's event stream and re-inspects a container whenever it starts, stops, dies, is paused, renamed or
//! connected to another network, so a restarted or replaced container (with a new address) is used without
//! restarting the agent. Every `resync_interval` it lists the containers again, which also notices an engine that
//! stopped answering. When the engine is unreachable the task logs one clear error, keeps the last known
//! containers (they usually keep running), retries with backoff, and lists everything again when the engine is
//! back.
//!
//! [`Discovery`] is the cheap, cloneable read side used by the forwarder: [`Discovery::candidates`] maps a
//! [`Target`] to the socket addresses of its running containers.

mod container;
mod engine;
#[cfg(test)]
mod tests;
mod view;

use std::path::PathBuf;
use std::time::Duration;

pub use container::Container;
pub use view::Discovery;
use view::Shared;

use crate::tasks::{Ended, Tasks};

#[cfg(doc)]
use crate::target::Target;

/// Default path of the Docker Engine API socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Settings of the discovery task.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Path of the Docker Engine API's Unix socket.
    pub socket: PathBuf,
    /// How often the full container list is fetched again, besides following events.
    pub resync_interval: Duration,
    /// Timeout of each API request (not of the event stream).
    pub request_timeout: Duration,
    /// Longest wait between reconnection attempts while the engine is unreachable.
    pub max_backoff: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            resync_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Whether the Docker engine answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    /// Not yet connected.
    Connecting,
    /// Connected and following events.
    Reachable,
    /// The last attempt failed; the containers known before stay in use.
    Unreachable {
        /// What went wrong, for the operator.
        error: String,
    },
}

/// Why talking to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The socket path cannot be passed to the client.
    #[error("Docker socket path {0} is not valid UTF-8")]
    SocketPath(PathBuf),
    /// The API answered with an error or could not be reached.
    #[error("Docker engine at {socket}: {source}")]
    Api {
        /// The socket used.
        socket: PathBuf,
        /// The client's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The event stream ended (the engine closed the connection or went away).
    #[error("Docker engine at {0}: the event stream ended")]
    EventsEnded(PathBuf),
}

/// The task that follows the Docker engine. Dropping it stops the task.
#[derive(Debug)]
pub struct DiscoveryTask {
    discovery: Discovery,
    tasks: Tasks,
}

impl DiscoveryTask {
    /// Starts following the engine at `config.socket`.
    pub fn spawn(config: DiscoveryConfig) -> DiscoveryTask {
        let shared = Shared::new(Vec::new(), EngineState::Connecting);
        let tasks = Tasks::new();
        let follow = engine::run(shared.clone(), config);
        tasks.spawn_critical("docker discovery", async move {
            follow.await;
            Ok(())
        });
        DiscoveryTask {
            discovery: Discovery { shared },
            tasks,
        }
    }

    /// Resolves if the task ended on its own (it never should).
    pub async fn ended(&self) -> Ended {
        self.tasks.ended().await
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }

    /// The read side, to hand to the forwarder.
    pub fn discovery(&self) -> Discovery {
        self.discovery.clone()
    }
}
