//! Where upstream instances come from: the seam between the data plane and the instance registry.
//!
//! The proxy asks an [`InstanceDirectory`] which instances serve an id and a port. The registry implements it
//! for registered CVMs reached over their tunnels; [`StaticDirectory`] serves a fixed table (tests, and
//! deployments without registration).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

/// One instance that could serve a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The instance id.
    pub instance_id: String,
    /// The address to connect to (the instance's tunnel address and the port).
    pub addr: SocketAddr,
    /// Whether this port wants a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    /// Time since the instance's tunnel last completed a handshake; `None` if it never did.
    pub since_handshake: Option<Duration>,
}

/// The instances that serve an id and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The app the id belongs to (the id itself when it is an app id).
    pub app_id: String,
    /// Every instance of the app (or the one named instance) that exposes the port, healthy or not, except those
    /// whose target its agent reported down (so it may be empty).
    pub candidates: Vec<Candidate>,
}

/// Why an id and port resolve to nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Neither an app nor an instance has this id.
    #[error("no app or instance with id {0}")]
    UnknownId(String),
    /// The app (or instance) does not expose the port.
    #[error("{id} does not expose port {port}")]
    PortNotExposed {
        /// The id looked up.
        id: String,
        /// The port asked for.
        port: u16,
    },
}

/// A view of one instance for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceView {
    /// The instance id.
    pub instance_id: String,
    /// The app it belongs to.
    pub app_id: String,
    /// The instance's address (without port).
    pub address: std::net::IpAddr,
    /// Exposed ports and whether each wants a PROXY protocol header.
    pub ports: BTreeMap<u16, bool>,
    /// Seconds since the last tunnel handshake, if any.
    pub since_handshake_secs: Option<u64>,
}

/// The source of upstream instances.
pub trait InstanceDirectory: Send + Sync + 'static {
    /// Resolves `id` (an app id first, then an instance id) and a port to the instances that expose it.
    fn resolve(&self, id: &str, port: u16) -> Result<Resolution, LookupError>;

    /// Every known instance, for the admin API.
    fn instances(&self) -> Vec<InstanceView>;

    /// Appends the directory's own metrics (Prometheus text) to the proxy's; none by default.
    fn render_metrics(&self, _out: &mut String) {}
}

/// A fixed, in-memory instance table.
#[derive(Debug, Default)]
pub struct StaticDirectory {
    instances: RwLock<Vec<InstanceView>>,
}

impl StaticDirectory {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an instance. Every port listed is exposed; `true` asks for a PROXY protocol header.
    pub fn upsert(
        &self,
        app_id: &str,
        instance_id: &str,
        address: std::net::IpAddr,
        ports: impl IntoIterator<Item = (u16, bool)>,
    ) {
        let view = InstanceView {
            instance_id: instance_id.to_ascii_lowercase(),
            app_id: app_id.to_ascii_lowercase(),
            address,
            ports: ports.into_iter().collect(),
            since_handshake_secs: Some(0),
        };
        let mut table = self.instances.write().unwrap_or_else(|e| e.into_inner());
        table.retain(|i| i.instance_id != view.instance_id);
        table.push(view);
    }

    /// Sets how long ago an instance last completed a handshake (`None`: never).
    pub fn set_since_handshake(&self, instance_id: &str, secs: Option<u64>) {
        let mut table = self.instances.write().unwrap_or_else(|e| e.into_inner());
        for i in table.iter_mut().filter(|i| i.instance_id == instance_id) {
            i.since_handshake_secs = secs;
        }
    }

    /// Removes an instance.
    pub fn remove(&self, instance_id: &str) {
        let mut table = self.instances.write().unwrap_or_else(|e| e.into_inner());
        table.retain(|i| i.instance_id != instance_id);
    }
}

impl InstanceDirectory for StaticDirectory {
    fn resolve(&self, id: &str, port: u16) -> Result<Resolution, LookupError> {
        let table = self.instances.read().unwrap_or_else(|e| e.into_inner());
        let by_app: Vec<&InstanceView> = table.iter().filter(|i| i.app_id == id).collect();
        let (app_id, members) = if !by_app.is_empty() {
            (id.to_owned(), by_app)
        } else if let Some(one) = table.iter().find(|i| i.instance_id == id) {
            (one.app_id.clone(), vec![one])
        } else {
            return Err(LookupError::UnknownId(id.to_owned()));
        };
        let candidates: Vec<Candidate> = members
            .into_iter()
            .filter_map(|i| {
                let proxy_protocol = *i.ports.get(&port)?;
                Some(Candidate {
                    instance_id: i.instance_id.clone(),
                    addr: SocketAddr::new(i.address, port),
                    proxy_protocol,
                    since_handshake: i.since_handshake_secs.map(Duration::from_secs),
                })
            })
            .collect();
        if candidates.is_empty() {
            return Err(LookupError::PortNotExposed {
                id: id.to_owned(),
                port,
            });
        }
        Ok(Resolution { app_id, candidates })
    }

    fn instances(&self) -> Vec<InstanceView> {
        self.instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_resolve_before_instance_ids_and_ports_filter() {
        let d = StaticDirectory::new();
        let ip = "127.0.0.2".parse().unwrap();
        d.upsert("aaaaaaaa", "11111111", ip, [(80, false), (8080, true)]);
        d.upsert("aaaaaaaa", "22222222", ip, [(80, false)]);
        let r = d.resolve("aaaaaaaa", 80).unwrap();
        assert_eq!(r.candidates.len(), 2);
        let r = d.resolve("aaaaaaaa", 8080).unwrap();
        assert_eq!(r.candidates.len(), 1);
        assert!(r.candidates[0].proxy_protocol);
        let r = d.resolve("22222222", 80).unwrap();
        assert_eq!(r.app_id, "aaaaaaaa");
        assert_eq!(r.candidates[0].instance_id, "22222222");
        assert_eq!(
            d.resolve("22222222", 8080),
            Err(LookupError::PortNotExposed {
                id: "22222222".into(),
                port: 8080
            })
        );
        assert_eq!(
            d.resolve("33333333", 80),
            Err(LookupError::UnknownId("33333333".into()))
        );
    }
}
