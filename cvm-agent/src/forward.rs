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

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::control::{PortPolicy, TargetState};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::docker::Discovery;
use crate::target::{Host, Target};

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

/// Maps targets to the addresses to try.
#[derive(Debug, Clone)]
struct Resolver {
    discovery: Option<Discovery>,
}

impl Resolver {
    async fn resolve(&self, target: &Target, tunnel_port: u16) -> Vec<SocketAddr> {
        match target {
            Target::Address {
                host: Host::Ip(ip),
                port,
            } => vec![SocketAddr::new(*ip, *port)],
            Target::Address {
                host: Host::Name(name),
                port,
            } => match tokio::net::lookup_host((name.as_str(), *port)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "cannot resolve target host");
                    Vec::new()
                }
            },
            _ => match &self.discovery {
                Some(d) => d.candidates(target, tunnel_port),
                None => Vec::new(),
            },
        }
    }
}

/// One port's rule, its round-robin position and, for a fixed address, its health.
#[derive(Debug)]
struct Port {
    rule: PortRule,
    next: AtomicUsize,
    /// Fixed-address targets only: whether the target accepts connections (`None` until the first probe).
    health: Option<watch::Sender<Option<bool>>>,
    /// Bumped on every state change of any port of the forwarder.
    changes: Arc<watch::Sender<u64>>,
}

impl Port {
    /// Records a fixed-address target's state; logs and signals only changes.
    fn set_health(&self, up: bool, reason: &str) {
        let Some(health) = &self.health else { return };
        let mut was = None;
        let changed = health.send_if_modified(|state| {
            was = *state;
            let changed = *state != Some(up);
            *state = Some(up);
            changed
        });
        if !changed {
            return;
        }
        let (port, target) = (self.rule.port, &self.rule.target);
        match (was, up) {
            (_, false) => {
                tracing::warn!(port, %target, reason, "target not reachable: refusing connections")
            }
            (Some(false), true) => {
                tracing::info!(port, %target, "target reachable again: accepting connections")
            }
            (_, true) => tracing::debug!(port, %target, "target reachable"),
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A fixed-address target's last known state (`None` for Docker targets and before the first probe).
    fn healthy(&self) -> Option<bool> {
        self.health.as_ref().and_then(|h| *h.borrow())
    }
}

/// The running forwarder. Dropping it closes the listeners and every relayed connection.
#[derive(Debug)]
pub struct Forwarder {
    ports: Vec<Arc<Port>>,
    local: Vec<SocketAddr>,
    resolver: Resolver,
    probe_timeout: Duration,
    changes: Arc<watch::Sender<u64>>,
    listeners: JoinSet<()>,
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
        let mut listeners = JoinSet::new();
        let changes = Arc::new(watch::channel(0u64).0);
        if let Some(mut rx) = resolver.discovery.as_ref().map(Discovery::subscribe) {
            let changes = changes.clone();
            listeners.spawn(async move {
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
                listeners.spawn(probe_loop(
                    port.clone(),
                    resolver.clone(),
                    probe_interval,
                    probe_timeout,
                ));
            }
            listeners.spawn(accept_loop(
                listener,
                port,
                resolver.clone(),
                config.connect_timeout,
            ));
        }
        Ok(Forwarder {
            ports,
            local,
            resolver,
            probe_timeout,
            changes,
            listeners,
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

    /// Stops accepting and closes every relayed connection.
    pub async fn shutdown(mut self) {
        self.listeners.shutdown().await;
    }
}

async fn probe_any(candidates: &[SocketAddr], timeout: Duration) -> bool {
    for addr in candidates {
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            return true;
        }
    }
    false
}

/// Probes a fixed-address target every `interval` for as long as the forwarder runs.
async fn probe_loop(port: Arc<Port>, resolver: Resolver, interval: Duration, timeout: Duration) {
    loop {
        let candidates = resolver.resolve(&port.rule.target, port.rule.port).await;
        let up = probe_any(&candidates, timeout).await;
        port.set_health(up, "no address accepted a probe connection");
        tokio::time::sleep(interval).await;
    }
}

/// What tells an accept loop to close or reopen its listener.
enum Watch {
    /// Docker discovery: the target is down while it has no running container.
    Discovery(watch::Receiver<u64>),
    /// A fixed address: down while probes (or forwarded connections) fail.
    Health(watch::Receiver<Option<bool>>),
    /// Nothing: always listening.
    Never,
}

impl Watch {
    /// Resolves when the state may have changed; never once its source has stopped.
    async fn changed(&mut self) {
        let stopped = match self {
            Watch::Discovery(rx) => rx.changed().await.is_err(),
            Watch::Health(rx) => rx.changed().await.is_err(),
            Watch::Never => true,
        };
        if stopped {
            *self = Watch::Never;
            std::future::pending::<()>().await
        }
    }
}

/// Serves one declared port. While its target is down (a Docker target with no running container, a fixed
/// address that does not accept) the listener is closed, so connection attempts are refused by the kernel at once
/// (and the gateway's connect race moves on to another instance); it is bound again as soon as the target is up.
async fn accept_loop(
    listener: TcpListener,
    port: Arc<Port>,
    resolver: Resolver,
    connect_timeout: Duration,
) {
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(port = port.rule.port, error = %e, "listener has no address");
            return;
        }
    };
    let mut listener = Some(listener);
    let fixed = matches!(port.rule.target, Target::Address { .. });
    let mut watch = match (&port.health, &resolver.discovery) {
        (Some(health), _) => Watch::Health(health.subscribe()),
        (None, Some(d)) => Watch::Discovery(d.subscribe()),
        (None, None) => Watch::Never,
    };
    let mut connections = JoinSet::new();
    loop {
        let down = match &mut watch {
            Watch::Never => None,
            // Unknown before the first probe: keep listening.
            Watch::Health(rx) => Some(*rx.borrow_and_update() == Some(false)),
            Watch::Discovery(_) => Some(
                resolver
                    .resolve(&port.rule.target, port.rule.port)
                    .await
                    .is_empty(),
            ),
        };
        if let Some(down) = down {
            if down && listener.is_some() {
                // A fixed target's state change is logged where it is detected.
                if !fixed {
                    tracing::info!(port = port.rule.port, target = %port.rule.target, "no running container: refusing connections");
                }
                listener = None;
            } else if !down && listener.is_none() {
                match TcpListener::bind(addr).await {
                    Ok(l) => {
                        if !fixed {
                            tracing::info!(port = port.rule.port, target = %port.rule.target, "container running: accepting connections");
                        }
                        listener = Some(l);
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot listen again; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
        }
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    let port = port.clone();
                    let resolver = resolver.clone();
                    connections.spawn(async move {
                        relay(stream, peer, &port, &resolver, connect_timeout).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly instead of spinning.
                    tracing::warn!(port = port.rule.port, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = watch.changed() => {}
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Accepts on the listener, or waits forever while there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Resolves when discovery reports a change; never, without discovery or once discovery has stopped.
async fn changed(changes: Option<&mut tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// Closes a connection with a reset instead of an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Connects to one candidate of `rule`'s target. The attempt is given up as soon as discovery no longer lists
/// `addr` (the container stopped while its address was being tried: connecting to an address that is gone would
/// otherwise take the whole timeout).
async fn connect_while_present(
    addr: SocketAddr,
    rule: &PortRule,
    resolver: &Resolver,
    mut changes: Option<&mut tokio::sync::watch::Receiver<u64>>,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let connect = tokio::time::timeout(timeout, TcpStream::connect(addr));
    tokio::pin!(connect);
    loop {
        tokio::select! {
            result = &mut connect => return match result {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            },
            _ = changed(changes.as_deref_mut()) => {
                if !resolver.resolve(&rule.target, rule.port).await.contains(&addr) {
                    return Err("the container went away".into());
                }
            }
        }
    }
}

async fn relay(
    mut inbound: TcpStream,
    peer: SocketAddr,
    port: &Port,
    resolver: &Resolver,
    connect_timeout: Duration,
) {
    let rule = &port.rule;
    // Subscribed before resolving, so a container that goes away from here on is noticed.
    let mut changes = match &rule.target {
        Target::Address { .. } => None,
        _ => resolver.discovery.as_ref().map(Discovery::subscribe),
    };
    let candidates = resolver.resolve(&rule.target, rule.port).await;
    if candidates.is_empty() {
        if port.health.is_some() {
            port.set_health(false, "the target's host name did not resolve");
        } else {
            tracing::warn!(port = rule.port, target = %rule.target, %peer, "no running container for the target: resetting");
        }
        return reset(inbound);
    }
    let start = port.next.fetch_add(1, Ordering::Relaxed);
    let mut outbound = None;
    for i in 0..candidates.len() {
        let addr = candidates[(start + i) % candidates.len()];
        match connect_while_present(addr, rule, resolver, changes.as_mut(), connect_timeout).await {
            Ok(s) => {
                outbound = Some(s);
                break;
            }
            Err(reason) => tracing::debug!(%addr, %reason, "container not reached"),
        }
    }
    let Some(mut outbound) = outbound else {
        if port.health.is_some() {
            // Down at once: the listener closes, so the next connections are refused until a probe succeeds.
            port.set_health(false, "a forwarded connection was not accepted");
            tracing::debug!(port = rule.port, %peer, "target did not accept: resetting");
        } else {
            tracing::warn!(port = rule.port, target = %rule.target, %peer, "no container accepted: resetting");
        }
        return reset(inbound);
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
        Ok((up, down)) => tracing::debug!(port = rule.port, %peer, up, down, "connection closed"),
        Err(e) => {
            // One side reset or failed: pass the failure on as a reset rather than a clean close.
            tracing::debug!(port = rule.port, %peer, error = %e, "connection aborted");
            reset(inbound);
            reset(outbound);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attempt_to_a_container_that_goes_away_is_given_up_at_once() {
        // A "container" whose address never answers: a listener whose backlog is full drops further SYNs.
        let blackhole =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        blackhole
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        blackhole.listen(0).unwrap();
        let hole = blackhole.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        while let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(hole)).await
        {
            fillers.push(s);
        }
        let container = crate::docker::Container {
            id: "c1".into(),
            name: "web-1".into(),
            labels: [(crate::target::SERVICE_LABEL.to_owned(), "web".to_owned())].into(),
            addresses: vec![hole.ip()],
        };
        let discovery = Discovery::fixed(vec![container]);
        let mut config = ForwardConfig::new(
            "127.0.0.1".parse().unwrap(),
            vec![PortRule {
                port: 0,
                target: format!("docker:web:{}", hole.port()).parse().unwrap(),
                proxy_protocol: false,
            }],
        );
        config.connect_timeout = Duration::from_secs(20);
        let fwd = Forwarder::start(config, Some(discovery.clone()))
            .await
            .unwrap();
        let mut c = TcpStream::connect(fwd.local_addrs()[0]).await.unwrap();
        // The forwarder is now trying the container; it stops.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stopped = std::time::Instant::now();
        discovery.remove("c1");
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut c, &mut buf),
        )
        .await
        .expect("the connection was left hanging");
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "reset {:?} after the container went away",
            stopped.elapsed()
        );
    }

    #[tokio::test]
    async fn fixed_address_ports_without_docker() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = backend.local_addr().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let rule = |target: String| PortRule {
            port: 0,
            target: target.parse().unwrap(),
            proxy_protocol: false,
        };
        // Docker targets need discovery.
        let err = Forwarder::start(
            ForwardConfig::new(
                "127.0.0.1".parse().unwrap(),
                vec![rule("docker:web:80".into())],
            ),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ForwardError::NoDiscovery { .. }));
        let fwd = Forwarder::start(
            ForwardConfig::new(
                "127.0.0.1".parse().unwrap(),
                vec![PortRule {
                    port: 0,
                    ..rule(up.to_string())
                }],
            ),
            None,
        )
        .await
        .unwrap();
        assert!(fwd.port_states().await[0].up);
        let fwd_closed = Forwarder::start(
            ForwardConfig::new("127.0.0.1".parse().unwrap(), vec![rule(closed.to_string())]),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            fwd_closed.port_policies().await[0].target_state,
            Some(TargetState::Down)
        );
        // Bytes relay through to the fixed address.
        // (The state probe above also connected: echo on every connection.)
        let accept = tokio::spawn(async move {
            loop {
                let (mut s, _) = backend.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let mut c = TcpStream::connect(fwd.local_addrs()[0]).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut c, b"hello")
            .await
            .unwrap();
        let mut buf = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut c, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf, b"hello");
        accept.abort();
        // A target that refuses: once its first probe (or a forwarded connection) found it down, connection
        // attempts are refused; one accepted before that gets a reset, never a hang.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpStream::connect(fwd_closed.local_addrs()[0]).await {
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                    break;
                }
                Ok(mut c) => {
                    let mut buf = [0u8; 1];
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::io::AsyncReadExt::read(&mut c, &mut buf),
                    )
                    .await
                    .unwrap();
                    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
                }
            }
            assert!(std::time::Instant::now() < deadline, "still accepting");
        }
    }
}
