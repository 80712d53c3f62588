//! Tests of reading containers, matching targets and picking the events that matter.

use std::net::{IpAddr, SocketAddr};

use bollard::models::{ContainerSummary, EndpointSettings, EventMessage};

use super::engine::affected_container;
use super::*;
use crate::target::{Target, COMPOSE_SERVICE_LABEL, PORT_LABEL, SERVICE_LABEL};
use bollard::models::{ContainerSummaryNetworkSettings, EventActor, EventMessageTypeEnum};

/// Owned key-value pairs, as Docker's API types hold labels and attributes.
fn string_map<M: FromIterator<(String, String)>>(pairs: &[(&str, &str)]) -> M {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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
        labels: Some(string_map(labels)),
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

/// A running container with `labels`, on one network at `ip` (none when `ip` is empty).
fn running(id: &str, labels: &[(&str, &str)], ip: &str) -> Container {
    let nets: &[(&str, &str)] = if ip.is_empty() { &[] } else { &[("n", ip)] };
    Container::from_summary(&summary(id, "running", labels, nets)).unwrap()
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
    let no_ip = Container::from_summary(&summary("c", "running", &[], &[("none", "")])).unwrap();
    assert!(no_ip.addresses.is_empty());
}

#[test]
fn candidates_by_service_and_label() {
    let web1 = running("1", &[(COMPOSE_SERVICE_LABEL, "web")], "172.19.0.2");
    let web2 = running("2", &[(SERVICE_LABEL, "web")], "172.19.0.3");
    let api = running(
        "3",
        &[(COMPOSE_SERVICE_LABEL, "api"), (PORT_LABEL, "443:8443")],
        "172.19.0.4",
    );
    let bare = running("4", &[(PORT_LABEL, "80")], "172.19.0.5");
    let unreachable = running("5", &[(SERVICE_LABEL, "web")], "");
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
            attributes: Some(string_map(attrs)),
        }),
        ..Default::default()
    };
    use EventMessageTypeEnum::{CONTAINER, IMAGE, NETWORK};
    type Case<'a> = (
        EventMessageTypeEnum,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
    );
    let cases: [Case<'_>; 6] = [
        (CONTAINER, "start", "c1", &[], Some("c1")),
        (CONTAINER, "die", "c1", &[], Some("c1")),
        (CONTAINER, "exec_start: sh", "c1", &[], None),
        (NETWORK, "connect", "n1", &[("container", "c2")], Some("c2")),
        (NETWORK, "create", "n1", &[], None),
        (IMAGE, "pull", "i", &[], None),
    ];
    for (typ, action, id, attrs, affected) in cases {
        assert_eq!(
            affected_container(&ev(typ, action, id, attrs)).as_deref(),
            affected,
            "{typ:?} {action}"
        );
    }
}
