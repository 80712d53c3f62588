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

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::{InspectContainerOptions, ListContainersOptions};
use bollard::models::{ContainerInspectResponse, ContainerSummary, EndpointSettings, EventMessage};
use bollard::system::EventsOptions;
use bollard::{ClientVersion, Docker};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::target::{parse_port_label, Target, COMPOSE_SERVICE_LABEL, PORT_LABEL, SERVICE_LABEL};

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

/// A running container as the forwarder needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// The container's labels.
    pub labels: HashMap<String, String>,
    /// Where the agent reaches it: its address in each Docker network (ordered by network name), or loopback for
    /// a container sharing the host's network.
    pub addresses: Vec<IpAddr>,
}

impl Container {
    fn from_summary(s: &ContainerSummary) -> Option<Container> {
        if s.state.as_deref() != Some("running") {
            return None;
        }
        let host_network = s
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
        let networks = s
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref());
        Some(Container {
            id: s.id.clone()?,
            name: s
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            labels: s.labels.clone().unwrap_or_default(),
            addresses: addresses(networks, host_network),
        })
    }

    fn from_inspect(c: &ContainerInspectResponse) -> Option<Container> {
        let state = c.state.as_ref()?;
        if state.running != Some(true)
            || state.paused == Some(true)
            || state.restarting == Some(true)
        {
            return None;
        }
        let host_network = c
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
        let networks = c
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref());
        Some(Container {
            id: c.id.clone()?,
            name: c
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            labels: c
                .config
                .as_ref()
                .and_then(|cfg| cfg.labels.clone())
                .unwrap_or_default(),
            addresses: addresses(networks, host_network),
        })
    }

    /// Whether this container serves `target` arriving on `tunnel_port`, and on which container port.
    pub fn serves(&self, target: &Target, tunnel_port: u16) -> Option<u16> {
        match target {
            Target::DockerService { service, port } => {
                let matches = |label: &str| self.labels.get(label).is_some_and(|v| v == service);
                (matches(COMPOSE_SERVICE_LABEL) || matches(SERVICE_LABEL)).then_some(*port)
            }
            Target::DockerLabel => {
                let (tunnel, container) = parse_port_label(self.labels.get(PORT_LABEL)?)?;
                (tunnel == tunnel_port).then_some(container)
            }
            Target::Address { .. } => None,
        }
    }
}

fn addresses(
    networks: Option<&HashMap<String, EndpointSettings>>,
    host_network: bool,
) -> Vec<IpAddr> {
    if host_network {
        return vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    }
    let mut sorted: Vec<(&String, &EndpointSettings)> = networks.into_iter().flatten().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
        .into_iter()
        .filter_map(|(_, e)| e.ip_address.as_deref()?.parse::<IpAddr>().ok())
        .collect()
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

#[derive(Debug)]
struct Snapshot {
    containers: BTreeMap<String, Container>,
    engine: EngineState,
}

#[derive(Debug)]
struct Shared {
    snapshot: RwLock<Snapshot>,
    /// Bumped after every change, so waiters can follow updates.
    generation: watch::Sender<u64>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        match self.snapshot.write() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        match self.snapshot.read() {
            Ok(s) => f(&s),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }
}

/// The read side of discovery: which containers run, and whether the engine answers.
#[derive(Debug, Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
}

impl Discovery {
    /// Addresses of the running containers serving `target` on `tunnel_port`, ordered by container id (empty for
    /// a fixed-address target).
    pub fn candidates(&self, target: &Target, tunnel_port: u16) -> Vec<SocketAddr> {
        self.shared.read(|s| {
            s.containers
                .values()
                .filter_map(|c| {
                    let port = c.serves(target, tunnel_port)?;
                    Some(SocketAddr::new(*c.addresses.first()?, port))
                })
                .collect()
        })
    }

    /// The running containers as last seen.
    pub fn containers(&self) -> Vec<Container> {
        self.shared
            .read(|s| s.containers.values().cloned().collect())
    }

    /// Whether the engine currently answers.
    pub fn engine_state(&self) -> EngineState {
        self.shared.read(|s| s.engine.clone())
    }

    /// A receiver that changes after every update of the container view or engine state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }
}

#[cfg(test)]
impl Discovery {
    /// A view holding `containers`, with no task behind it (for the forwarder's tests).
    pub(crate) fn fixed(containers: Vec<Container>) -> Discovery {
        let (generation, _) = watch::channel(0);
        Discovery {
            shared: Arc::new(Shared {
                snapshot: RwLock::new(Snapshot {
                    containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
                    engine: EngineState::Reachable,
                }),
                generation,
            }),
        }
    }

    /// Drops a container from the view, as when it stops.
    pub(crate) fn remove(&self, id: &str) {
        self.shared.update(|s| {
            s.containers.remove(id);
        });
    }
}

/// The task that follows the Docker engine. Dropping it stops the task.
#[derive(Debug)]
pub struct DiscoveryTask {
    discovery: Discovery,
    task: JoinHandle<()>,
}

impl DiscoveryTask {
    /// Starts following the engine at `config.socket`.
    pub fn spawn(config: DiscoveryConfig) -> DiscoveryTask {
        let (generation, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Snapshot {
                containers: BTreeMap::new(),
                engine: EngineState::Connecting,
            }),
            generation,
        });
        let task = tokio::spawn(run(shared.clone(), config));
        DiscoveryTask {
            discovery: Discovery { shared },
            task,
        }
    }

    /// The read side, to hand to the forwarder.
    pub fn discovery(&self) -> Discovery {
        self.discovery.clone()
    }
}

impl Drop for DiscoveryTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(shared: Arc<Shared>, config: DiscoveryConfig) {
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    loop {
        let result = follow(&shared, &config, &mut backoff, &mut reported).await;
        let Err(e) = result;
        let error = e.to_string();
        if !reported {
            tracing::error!(
                socket = %config.socket.display(),
                error = %error,
                "Docker engine unreachable: forwarding to the containers known before, retrying"
            );
            reported = true;
        } else {
            tracing::debug!(error = %error, "Docker engine still unreachable");
        }
        shared.update(|s| s.engine = EngineState::Unreachable { error });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// Connects, lists and follows events until something fails. Only returns on error.
async fn follow(
    shared: &Shared,
    config: &DiscoveryConfig,
    backoff: &mut Duration,
    reported: &mut bool,
) -> Result<std::convert::Infallible, EngineError> {
    let api = |source| EngineError::Api {
        socket: config.socket.clone(),
        source,
    };
    let docker = connect(&config.socket, config.request_timeout).await?;
    // Events from one second before the listing, so nothing between the two is missed (replays are harmless).
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    let mut filters = HashMap::new();
    filters.insert(
        "type".to_owned(),
        vec!["container".to_owned(), "network".to_owned()],
    );
    let mut events = docker
        .events(Some(EventsOptions::<String> {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters,
        }))
        .boxed();
    resync(shared, &docker).await.map_err(api)?;
    if *reported {
        tracing::info!(socket = %config.socket.display(), "Docker engine reachable again");
        *reported = false;
    }
    *backoff = Duration::from_millis(100);
    let mut resync_timer = tokio::time::interval(config.resync_interval);
    resync_timer.tick().await;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if let Some(id) = affected_container(&event) {
                        refresh(shared, &docker, &id).await.map_err(api)?;
                    }
                }
                Some(Err(e)) => return Err(api(e)),
                None => return Err(EngineError::EventsEnded(config.socket.clone())),
            },
            _ = resync_timer.tick() => resync(shared, &docker).await.map_err(api)?,
        }
    }
}

/// Connects with the newest API version both sides speak.
async fn connect(socket: &Path, timeout: Duration) -> Result<Docker, EngineError> {
    let path = socket
        .to_str()
        .ok_or_else(|| EngineError::SocketPath(socket.to_owned()))?;
    let api = |source| EngineError::Api {
        socket: socket.to_owned(),
        source,
    };
    let secs = timeout.as_secs().max(1);
    let docker =
        Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION).map_err(api)?;
    match docker.negotiate_version().await {
        Ok(docker) => Ok(docker),
        // Engines older than the client's default refuse even `/version` at that version: start from API 1.41
        // (Docker 20.10) and negotiate from there.
        Err(bollard::errors::Error::DockerResponseServerError { message, .. })
            if message.contains("too new") =>
        {
            let old = ClientVersion {
                major_version: 1,
                minor_version: 41,
            };
            Docker::connect_with_unix(path, secs, &old)
                .map_err(api)?
                .negotiate_version()
                .await
                .map_err(api)
        }
        Err(e) => Err(api(e)),
    }
}

/// Replaces the whole view with a fresh listing.
async fn resync(shared: &Shared, docker: &Docker) -> Result<(), bollard::errors::Error> {
    let list = docker
        .list_containers(Some(ListContainersOptions::<String> {
            all: false,
            ..Default::default()
        }))
        .await?;
    let containers: BTreeMap<String, Container> = list
        .iter()
        .filter_map(Container::from_summary)
        .map(|c| (c.id.clone(), c))
        .collect();
    tracing::debug!(count = containers.len(), "listed running containers");
    shared.update(|s| {
        s.containers = containers;
        s.engine = EngineState::Reachable;
    });
    Ok(())
}

/// Inspects one container again after an event and updates (or removes) it.
async fn refresh(shared: &Shared, docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let container = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => Container::from_inspect(&c),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => return Err(e),
    };
    match &container {
        Some(c) => {
            tracing::debug!(id, name = %c.name, addresses = ?c.addresses, "container running")
        }
        None => tracing::debug!(id, "container not running"),
    }
    shared.update(|s| {
        match container {
            Some(c) => s.containers.insert(c.id.clone(), c),
            None => s.containers.remove(id),
        };
    });
    Ok(())
}

/// The container an event is about, if it can change where connections go.
fn affected_container(event: &EventMessage) -> Option<String> {
    use bollard::models::EventMessageTypeEnum as Type;
    let actor = event.actor.as_ref()?;
    let action = event.action.as_deref().unwrap_or_default();
    match event.typ? {
        Type::CONTAINER => {
            // `exec_*`, `attach`, `top`, `health_status: ...` and similar do not change addresses or state.
            let relevant = matches!(
                action,
                "start"
                    | "restart"
                    | "stop"
                    | "die"
                    | "kill"
                    | "pause"
                    | "unpause"
                    | "destroy"
                    | "rename"
                    | "update"
                    | "oom"
            );
            relevant.then(|| actor.id.clone()).flatten()
        }
        Type::NETWORK if action == "connect" || action == "disconnect" => {
            actor.attributes.as_ref()?.get("container").cloned()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerSummaryNetworkSettings, EventActor, EventMessageTypeEnum};

    fn summary(
        id: &str,
        state: &str,
        labels: &[(&str, &str)],
        nets: &[(&str, &str)],
    ) -> ContainerSummary {
        ContainerSummary {
            id: Some(id.into()),
            names: Some(vec![format!("/{id}-name")]),
            state: Some(state.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(
                    nets.iter()
                        .map(|(n, ip)| {
                            (
                                n.to_string(),
                                EndpointSettings {
                                    ip_address: Some(ip.to_string()),
                                    ..Default::default()
                                },
                            )
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn summary_maps_running_containers_only() {
        let c = Container::from_summary(&summary(
            "a",
            "running",
            &[],
            &[("net2", "172.20.0.3"), ("net1", "172.19.0.2")],
        ))
        .unwrap();
        assert_eq!(c.name, "a-name");
        assert_eq!(
            c.addresses,
            vec![
                "172.19.0.2".parse::<IpAddr>().unwrap(),
                "172.20.0.3".parse().unwrap()
            ]
        );
        assert!(Container::from_summary(&summary("b", "paused", &[], &[])).is_none());
        assert!(Container::from_summary(&summary("b", "exited", &[], &[])).is_none());
        let no_ip =
            Container::from_summary(&summary("c", "running", &[], &[("none", "")])).unwrap();
        assert!(no_ip.addresses.is_empty());
    }

    #[test]
    fn candidates_by_service_and_label() {
        let web1 = Container::from_summary(&summary(
            "1",
            "running",
            &[(COMPOSE_SERVICE_LABEL, "web")],
            &[("n", "172.19.0.2")],
        ))
        .unwrap();
        let web2 = Container::from_summary(&summary(
            "2",
            "running",
            &[(SERVICE_LABEL, "web")],
            &[("n", "172.19.0.3")],
        ))
        .unwrap();
        let api = Container::from_summary(&summary(
            "3",
            "running",
            &[(COMPOSE_SERVICE_LABEL, "api"), (PORT_LABEL, "443:8443")],
            &[("n", "172.19.0.4")],
        ))
        .unwrap();
        let bare = Container::from_summary(&summary(
            "4",
            "running",
            &[(PORT_LABEL, "80")],
            &[("n", "172.19.0.5")],
        ))
        .unwrap();
        let unreachable =
            Container::from_summary(&summary("5", "running", &[(SERVICE_LABEL, "web")], &[]))
                .unwrap();
        let d = Discovery::fixed(vec![web1, web2, api, bare, unreachable]);
        let web = Target::DockerService {
            service: "web".into(),
            port: 8080,
        };
        assert_eq!(
            d.candidates(&web, 80),
            vec![
                "172.19.0.2:8080".parse::<SocketAddr>().unwrap(),
                "172.19.0.3:8080".parse().unwrap()
            ]
        );
        assert_eq!(
            d.candidates(&Target::DockerLabel, 443),
            vec!["172.19.0.4:8443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            d.candidates(&Target::DockerLabel, 80),
            vec!["172.19.0.5:80".parse::<SocketAddr>().unwrap()]
        );
        assert!(d.candidates(&Target::DockerLabel, 8080).is_empty());
        let none = Target::DockerService {
            service: "db".into(),
            port: 5432,
        };
        assert!(d.candidates(&none, 5432).is_empty());
    }

    #[test]
    fn events_that_matter() {
        let ev = |typ, action: &str, id: &str, attrs: &[(&str, &str)]| EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..Default::default()
        };
        assert_eq!(
            affected_container(&ev(EventMessageTypeEnum::CONTAINER, "start", "c1", &[])),
            Some("c1".into())
        );
        assert_eq!(
            affected_container(&ev(EventMessageTypeEnum::CONTAINER, "die", "c1", &[])),
            Some("c1".into())
        );
        assert_eq!(
            affected_container(&ev(
                EventMessageTypeEnum::CONTAINER,
                "exec_start: sh",
                "c1",
                &[]
            )),
            None
        );
        assert_eq!(
            affected_container(&ev(
                EventMessageTypeEnum::NETWORK,
                "connect",
                "n1",
                &[("container", "c2")]
            )),
            Some("c2".into())
        );
        assert_eq!(
            affected_container(&ev(EventMessageTypeEnum::NETWORK, "create", "n1", &[])),
            None
        );
        assert_eq!(
            affected_container(&ev(EventMessageTypeEnum::IMAGE, "pull", "i", &[])),
            None
        );
    }
}
