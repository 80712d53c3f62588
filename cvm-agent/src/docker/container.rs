//! A running container as the forwarder needs it, read from the engine's listing or inspection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use bollard::models::{ContainerInspectResponse, ContainerSummary, EndpointSettings};

use crate::target::{parse_port_label, Target, COMPOSE_SERVICE_LABEL, PORT_LABEL, SERVICE_LABEL};

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
    /// The container in a listing entry, if it runs.
    pub(super) fn from_summary(s: &ContainerSummary) -> Option<Container> {
        if s.state.as_deref() != Some("running") {
            return None;
        }
        Self::running(
            s.id.as_deref(),
            s.names.as_ref().and_then(|n| n.first()).map(String::as_str),
            s.labels.as_ref(),
            s.host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref()),
            s.network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref()),
        )
    }

    /// The container in an inspection, if it runs (not paused, not restarting).
    pub(super) fn from_inspect(c: &ContainerInspectResponse) -> Option<Container> {
        let state = c.state.as_ref()?;
        if state.running != Some(true)
            || state.paused == Some(true)
            || state.restarting == Some(true)
        {
            return None;
        }
        Self::running(
            c.id.as_deref(),
            c.name.as_deref(),
            c.config.as_ref().and_then(|cfg| cfg.labels.as_ref()),
            c.host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref()),
            c.network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref()),
        )
    }

    /// A running container from the parts both API answers have.
    fn running(
        id: Option<&str>,
        name: Option<&str>,
        labels: Option<&HashMap<String, String>>,
        network_mode: Option<&str>,
        networks: Option<&HashMap<String, EndpointSettings>>,
    ) -> Option<Container> {
        Some(Container {
            id: id?.to_owned(),
            name: name.unwrap_or_default().trim_start_matches('/').to_owned(),
            labels: labels.cloned().unwrap_or_default(),
            addresses: addresses(networks, network_mode == Some("host")),
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
