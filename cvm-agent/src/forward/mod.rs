//! The port forwarder: one listener per declared port on the agent's tunnel address, each connection relayed to
//! the port's [`Target`].
//!
//! - Containers of a target are used in turn (round robin per port); when one refuses or times out, the next is
//!   tried. An attempt to a container that discovery drops meanwhile (it stopped) is given up at once.
//! - While a Docker target has no running container its listener is closed, so connection attempts are refused at
//!   once (RST to the SYN) and the gateway's connect race moves on to another instance; a connection accepted
//!   when no container (or none that accepts) is left is reset at once. Nothing is left hanging.
//! - A fixed-address target (`HOST:PORT`) is probed with a TCP connect every [`ForwardConfig::probe_interval`];
//!   while it does not accept, its listener is closed in the same way. One failed probe, or one forwarded
//!   connection the target does not accept, marks it down at once; the next successful probe brings the listener
//!   back. Connections themselves never wait for a probe.
//! - Every port state change (a container started or stopped, a fixed address stopped or started accepting) is
//!   signalled through [`Forwarder::changes`], so the agent can report it to the gateway at once.
//! - Only declared ports have listeners on the tunnel address; the tunnel endpoint's inbound filter (set by
//!   `cvm-agent run`) refuses every other port, also for local services that listen on a wildcard address.
//! - The relay copies bytes unchanged in both directions (half-close preserved): a PROXY protocol header sent by
//!   the gateway reaches the container as it was sent.
//!
//! [`Forwarder`] owns its listener tasks and, through them, every relayed connection: dropping it (or calling
//! [`Forwarder::shutdown`]) closes them all.

mod listener;
mod port;
mod probe;
mod relay;
mod resolve;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use protocol::control::{PortPolicy, TargetState};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::docker::Discovery;
use crate::target::Target;
use crate::tasks::{Ended, Tasks};
use listener::accept_loop;
use port::Port;
use probe::{probe_any, probe_loop};
use resolve::Resolver;

/// One declared port and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRule {
    /// The port on the tunnel address.
    pub port: u16,
    /// Where connections to it are forwarded.
    pub target: Target,
    /// Whether the gateway prefixes each connection with a PROXY protocol v2 header (announced at registration;
    /// the header reaches the target unchanged, so the target must expect it).
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// Settings of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Address the listeners bind (the agent's tunnel address).
    pub listen: IpAddr,
    /// The declared ports.
    pub ports: Vec<PortRule>,
    /// How long one connection attempt to a container may take before the next container is tried.
    pub connect_timeout: Duration,
    /// How long a fixed-address target may take to accept when its state is probed (capped at the probe
    /// interval).
    pub probe_timeout: Duration,
    /// How often a fixed-address target is probed.
    pub probe_interval: Duration,
}

/// The default [`ForwardConfig::probe_interval`].
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(2);

impl ForwardConfig {
    /// Settings with default timeouts.
    pub fn new(listen: IpAddr, ports: Vec<PortRule>) -> Self {
        Self {
            listen,
            ports,
            connect_timeout: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(1),
            probe_interval: DEFAULT_PROBE_INTERVAL,
        }
    }
}

/// Whether a declared port's target can take connections right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    /// The declared port.
    pub port: u16,
    /// True if the target has at least one running container (Docker targets) or accepts a connection (fixed
    /// addresses).
    pub up: bool,
}

impl PortState {
    /// The state as the control protocol reports it.
    pub fn target_state(&self) -> TargetState {
        if self.up {
            TargetState::Up
        } else {
            TargetState::Down
        }
    }
}

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A port is declared twice.
    #[error("port {0} is declared more than once")]
    DuplicatePort(u16),
    /// A Docker target without Docker discovery.
    #[error("port {port}: target `{target}` needs Docker discovery, which is not configured")]
    NoDiscovery {
        /// The port.
        port: u16,
        /// Its target.
        target: Target,
    },
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The running forwarder. Dropping it closes the listeners and every relayed connection.
#[derive(Debug)]
pub struct Forwarder {
    ports: Vec<Arc<Port>>,
    local: Vec<SocketAddr>,
    resolver: Resolver,
    probe_timeout: Duration,
    changes: Arc<watch::Sender<u64>>,
    /// The listener, probe and change-relay tasks (each listener task owns its relayed connections).
    tasks: Tasks,
}

impl Forwarder {
    /// Binds a listener for every declared port and starts forwarding. `discovery` is required when any target
    /// is a Docker target.
    pub async fn start(
        config: ForwardConfig,
        discovery: Option<Discovery>,
    ) -> Result<Forwarder, ForwardError> {
        let mut seen = std::collections::HashSet::new();
        for rule in &config.ports {
            if !seen.insert(rule.port) {
                return Err(ForwardError::DuplicatePort(rule.port));
            }
            if discovery.is_none() && !matches!(rule.target, Target::Address { .. }) {
                return Err(ForwardError::NoDiscovery {
                    port: rule.port,
                    target: rule.target.clone(),
                });
            }
        }
        let resolver = Resolver { discovery };
        let mut bound = Vec::new();
        for rule in &config.ports {
            let addr = SocketAddr::new(config.listen, rule.port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ForwardError::Bind { addr, source })?;
            bound.push((listener, rule.clone()));
        }
        let tasks = Tasks::new();
        let changes = Arc::new(watch::channel(0u64).0);
        if let Some(mut rx) = resolver.discovery.as_ref().map(Discovery::subscribe) {
            let changes = changes.clone();
            tasks.spawn(async move {
                while rx.changed().await.is_ok() {
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                }
            });
        }
        let probe_interval = config.probe_interval;
        let probe_timeout = config.probe_timeout.min(probe_interval);
        let mut ports = Vec::new();
        let mut local = Vec::new();
        for (listener, rule) in bound {
            let addr = listener.local_addr().map_err(|source| ForwardError::Bind {
                addr: SocketAddr::new(config.listen, rule.port),
                source,
            })?;
            tracing::info!(%addr, target = %rule.target, "forwarding port");
            let fixed = matches!(rule.target, Target::Address { .. });
            let port = Arc::new(Port {
                rule,
                next: AtomicUsize::new(0),
                health: fixed.then(|| watch::channel(None).0),
                changes: changes.clone(),
            });
            local.push(addr);
            ports.push(port.clone());
            if fixed {
                let probe = probe_loop(
                    port.clone(),
                    resolver.clone(),
                    probe_interval,
                    probe_timeout,
                );
                tasks.spawn_critical("forwarder probe", async move {
                    probe.await;
                    Ok(())
                });
            }
            let accept = accept_loop(listener, port, resolver.clone(), config.connect_timeout);
            tasks.spawn_critical("forwarder listener", async move {
                accept.await;
                Ok(())
            });
        }
        Ok(Forwarder {
            ports,
            local,
            resolver,
            probe_timeout,
            changes,
            tasks,
        })
    }

    /// The bound listener addresses, in the order of the declared ports.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// The declared ports.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.iter().map(|p| p.rule.port).collect()
    }

    /// Each declared port's state, for registration and re-registration reports.
    pub async fn port_states(&self) -> Vec<PortState> {
        let mut states = Vec::with_capacity(self.ports.len());
        for p in &self.ports {
            let up = match (&p.rule.target, p.healthy()) {
                // A fixed address: the latest probe or forwarded connection tells; before the first probe, one now.
                (Target::Address { .. }, Some(up)) => up,
                (target, _) => {
                    let candidates = self.resolver.resolve(target, p.rule.port).await;
                    match target {
                        Target::Address { .. } => probe_any(&candidates, self.probe_timeout).await,
                        _ => !candidates.is_empty(),
                    }
                }
            };
            states.push(PortState {
                port: p.rule.port,
                up,
            });
        }
        states
    }

    /// The declared ports with their PROXY protocol setting and current target state, as sent to the gateway at
    /// registration and re-registration.
    pub async fn port_policies(&self) -> Vec<PortPolicy> {
        let states = self.port_states().await;
        self.ports
            .iter()
            .zip(states)
            .map(|(p, s)| PortPolicy {
                port: p.rule.port,
                proxy_protocol: p.rule.proxy_protocol,
                target_state: Some(s.target_state()),
            })
            .collect()
    }

    /// A receiver that changes whenever a port's state may have changed (the container view changed, a fixed
    /// address stopped or started accepting), so the caller can re-register early when a port's state flips.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Resolves when a listener or probe task ended on its own (it never should), naming it.
    pub async fn ended(&self) -> Ended {
        self.tasks.ended().await
    }

    /// Stops accepting, closes every relayed connection and waits until all of it has stopped.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}
