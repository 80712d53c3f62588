//! The forwarder against the real Docker engine and the test-server image: targets by Compose service, by
//! `tee-gateway.service` and by `tee-gateway.port`; restarts and new addresses; stopped containers; several
//! containers per service; undeclared ports; PROXY protocol bytes; and an engine that goes away and comes back.
//!
//! Needs root and a Docker engine on `/var/run/docker.sock`; builds the image with
//! `scripts/build-test-image.sh --if-stale`. Each test creates its own uniquely named containers and networks and
//! removes them on drop (also on failure); leftovers of crashed runs are removed at start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cvm_agent::docker::{Discovery, DiscoveryConfig, DiscoveryTask, EngineState};
use cvm_agent::forward::{ForwardConfig, Forwarder, PortRule, PortState};
use cvm_agent::target::{COMPOSE_SERVICE_LABEL, PORT_LABEL, SERVICE_LABEL};
use protocol::control::TargetState;
use support::wait_for;
use test_support::docker::{
    docker, http_get, prepare, served_by, unique, unique_port, wait_listening, Containers,
    SocketRelay,
};
use test_support::process::stdout_of;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A loopback address of its own per test, standing in for the tunnel address.
fn listen(n: u8) -> IpAddr {
    IpAddr::from([127, 77, 0, n])
}

fn rule(port: u16, target: &str) -> PortRule {
    PortRule {
        port,
        target: target.parse().unwrap(),
        proxy_protocol: false,
    }
}

/// The forwarder for `ports` on the loopback address `at`, with discovery `d`.
async fn forwarder(at: IpAddr, ports: Vec<PortRule>, d: &Discovery) -> Forwarder {
    Forwarder::start(ForwardConfig::new(at, ports), Some(d.clone()))
        .await
        .unwrap()
}

/// Discovery on the real engine's socket (its task, to keep, and its view) and a forwarder using it for `ports`
/// on the loopback address `at`.
async fn forwarding(at: IpAddr, ports: Vec<PortRule>) -> (DiscoveryTask, Discovery, Forwarder) {
    let task = engine_discovery();
    let d = task.discovery();
    let fwd = forwarder(at, ports, &d).await;
    (task, d, fwd)
}

/// Waits until `via` listens, then returns the name of the test server that answers a GET through it.
async fn served_through(via: SocketAddr) -> String {
    wait_listening(via).await;
    served_by(&http_get(via, "/").await.unwrap())
}

/// Starts a serving container `name` with one label.
async fn start_labelled(scratch: &mut Containers, name: &str, label: &str, value: String) {
    scratch.start(name, &[(label, value)], &[]).await;
}

/// Prepares the engine (see `prepare`) and starts one serving container of a fresh service (`tee-gateway.service`
/// label), its name made from `prefix`; returns the service and the container.
async fn service_container(scratch: &mut Containers, prefix: &str) -> (String, String) {
    prepare();
    let (svc, c) = (unique("svc"), unique(prefix));
    start_labelled(scratch, &c, SERVICE_LABEL, svc.clone()).await;
    (svc, c)
}

/// Discovery on the real engine's socket.
fn engine_discovery() -> DiscoveryTask {
    discovery_on(PathBuf::from(cvm_agent::docker::DEFAULT_SOCKET))
}

fn discovery_on(socket: PathBuf) -> DiscoveryTask {
    DiscoveryTask::spawn(DiscoveryConfig {
        socket,
        max_backoff: Duration::from_millis(300),
        ..DiscoveryConfig::default()
    })
}

/// Expects the forwarder to turn the connection away quickly: refused outright (no listener while the target has
/// no container) or reset (RST, not FIN) right after being accepted. Returns how long it took.
async fn expect_reset(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return start.elapsed(),
        Err(e) => panic!("connecting: {e}"),
    };
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the connection was left hanging");
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => start.elapsed(),
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs root and a Docker engine (builds the test image)"]
async fn forwards_by_compose_service_and_service_label_with_real_clients() {
    prepare();
    let mut scratch = Containers::default();
    let (svc_a, svc_b) = (unique("svc"), unique("svc"));
    let (a, b) = (unique("a"), unique("b"));
    start_labelled(&mut scratch, &a, COMPOSE_SERVICE_LABEL, svc_a.clone()).await;
    start_labelled(&mut scratch, &b, SERVICE_LABEL, svc_b.clone()).await;
    let ports = vec![
        rule(80, &format!("docker:{svc_a}:8080")),
        rule(81, &format!("docker:{svc_b}:8080")),
        rule(443, &format!("docker:{svc_a}:8443")),
    ];
    let (_task, d, fwd) = forwarding(listen(1), ports).await;
    wait_for(&d, WAIT, "both containers", |d| {
        d.containers()
            .iter()
            .filter(|c| c.name == a || c.name == b)
            .count()
            == 2
    })
    .await;
    assert_eq!(
        fwd.port_states().await,
        [
            PortState { port: 80, up: true },
            PortState { port: 81, up: true },
            PortState {
                port: 443,
                up: true
            }
        ]
    );

    let via = |port| SocketAddr::new(listen(1), port);
    assert_eq!(served_through(via(80)).await, a);
    assert_eq!(served_through(via(81)).await, b);

    // gRPC (h2c) and WebSocket through the forwarder, with Python grpcio and websockets.
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/clients");
    let python = |script: &str, args: &[&str]| {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(clients.join(script)).args(args);
        cmd
    };
    let out = stdout_of(&mut python(
        "grpc_echo.py",
        &[&via(80).to_string(), "stream", "3"],
    ))
    .await;
    assert_eq!(out, format!("{a} 0\n{a} 1\n{a} 2\n"));
    let ws = format!("ws://{}/ws", via(81));
    let out = stdout_of(&mut python("ws_echo.py", &[&ws, "through", "the agent"])).await;
    assert_eq!(out.trim(), b);

    // The container's own TLS (the passthrough case) reaches the client end to end: the name in its
    // certificate is the container's host name.
    let text = stdout_of(
        tokio::process::Command::new("curl")
            .args([
                "-sS",
                "-k",
                "--max-time",
                "5",
                "-w",
                "\n%{ssl_verify_result}",
            ])
            .args([
                "--resolve",
                &format!("{a}:443:{}", listen(1)),
                &format!("https://{a}:443/tls"),
            ]),
    )
    .await;
    let body = text.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["server"], a.as_str());
    assert_eq!(v["tls"], true);
}

#[tokio::test]
#[ignore = "needs root and a Docker engine (builds the test image)"]
async fn docker_label_target_uses_the_port_label() {
    prepare();
    let mut scratch = Containers::default();
    let (p1, p2) = (unique_port(), unique_port());
    let (c1, c2) = (unique("lbl"), unique("lbl"));
    start_labelled(&mut scratch, &c1, PORT_LABEL, format!("{p1}:8080")).await;
    // `<port>` alone means the same port inside the container: 9000 is the raw echo.
    start_labelled(&mut scratch, &c2, PORT_LABEL, "9000".to_owned()).await;
    let ports = vec![rule(p1, "docker-label"), rule(p2, "docker-label")];
    let (_task, d, fwd) = forwarding(listen(2), ports).await;
    wait_for(&d, WAIT, "the labelled container", |d| {
        d.containers().iter().any(|c| c.name == c1)
    })
    .await;
    assert_eq!(served_through(SocketAddr::new(listen(2), p1)).await, c1);
    // Nothing carries `tee-gateway.port=<p2>`: that port is down and resets.
    assert_eq!(
        fwd.port_states().await[1],
        PortState {
            port: p2,
            up: false
        }
    );
    let took = expect_reset(SocketAddr::new(listen(2), p2)).await;
    assert!(took < Duration::from_millis(500), "reset took {took:?}");
}

#[tokio::test]
#[ignore = "needs root and a Docker engine (builds the test image)"]
async fn restarted_and_readdressed_container_is_used_without_restarting() {
    prepare();
    let mut scratch = Containers::default();
    let (net, prefix) = scratch.network(&unique("net"));
    let svc = unique("svc");
    let c = unique("rst");
    let first_ip = format!("{prefix}.10");
    scratch
        .start(
            &c,
            &[(SERVICE_LABEL, svc.clone())],
            &["--network", &net, "--ip", &first_ip],
        )
        .await;
    let target: cvm_agent::target::Target = format!("docker:{svc}:8080").parse().unwrap();
    let rule = PortRule {
        port: 80,
        target: target.clone(),
        proxy_protocol: false,
    };
    let (_task, d, fwd) = forwarding(listen(3), vec![rule]).await;
    let at = |ip: &str| vec![SocketAddr::new(ip.parse().unwrap(), 8080)];
    wait_for(&d, WAIT, "the container", |d| {
        d.candidates(&target, 80) == at(&first_ip)
    })
    .await;
    let via = SocketAddr::new(listen(3), 80);
    assert_eq!(served_through(via).await, c);

    docker(&["restart", "-t", "1", &c]);
    scratch.wait_ready(&c).await;
    wait_for(&d, WAIT, "the restarted container", |d| {
        d.candidates(&target, 80) == at(&first_ip)
    })
    .await;
    assert_eq!(served_through(via).await, c);

    // Replace its address: the forwarder follows the engine's events to the new one.
    let second_ip = format!("{prefix}.20");
    docker(&["stop", "-t", "1", &c]);
    docker(&["network", "disconnect", &net, &c]);
    docker(&["network", "connect", "--ip", &second_ip, &net, &c]);
    docker(&["start", &c]);
    scratch.wait_ready(&c).await;
    assert_eq!(scratch.address(&c), second_ip);
    wait_for(&d, WAIT, "the new address", |d| {
        d.candidates(&target, 80) == at(&second_ip)
    })
    .await;
    assert_eq!(served_through(via).await, c);
    drop(fwd);
}

#[tokio::test]
#[ignore = "needs root and a Docker engine (builds the test image)"]
async fn stopped_container_resets_fast_and_reports_down() {
    let mut scratch = Containers::default();
    let (svc, c) = service_container(&mut scratch, "stop").await;
    let target = format!("docker:{svc}:8080");
    let (_task, d, fwd) = forwarding(listen(4), vec![rule(80, &target)]).await;
    let t = target.parse().unwrap();
    wait_for(&d, WAIT, "the container", |d| {
        !d.candidates(&t, 80).is_empty()
    })
    .await;
    let via = SocketAddr::new(listen(4), 80);
    assert_eq!(served_through(via).await, c);
    assert_eq!(fwd.port_states().await, [PortState { port: 80, up: true }]);

    docker(&["stop", "-t", "1", &c]);
    wait_for(&d, WAIT, "the container to be gone", |d| {
        d.candidates(&t, 80).is_empty()
    })
    .await;
    assert_eq!(
        fwd.port_states().await,
        [PortState {
            port: 80,
            up: false
        }]
    );
    assert_eq!(
        fwd.port_policies().await[0].target_state,
        Some(TargetState::Down)
    );
    let took = expect_reset(via).await;
    assert!(took < Duration::from_millis(500), "reset took {took:?}");

    docker(&["start", &c]);
    scratch.wait_ready(&c).await;
    wait_for(&d, WAIT, "the container to be back", |d| {
        !d.candidates(&t, 80).is_empty()
    })
    .await;
    assert_eq!(served_through(via).await, c);
    assert_eq!(fwd.port_states().await, [PortState { port: 80, up: true }]);
}

#[tokio::test]
#[ignore = "needs root and a Docker engine (builds the test image)"]
async fn two_containers_of_one_service_both_receive_connections() {
    prepare();
    let mut scratch = Containers::default();
    let svc = unique("svc");
    let (c1, c2) = (unique("rr"), unique("rr"));
    start_labelled(&mut scratch, &c1, COMPOSE_SERVICE_LABEL, svc.clone()).await;
    start_labelled(&mut scratch, &c2, COMPOSE_SERVICE_LABEL, svc.clone()).await;
    let target = format!("docker:{svc}:8080");
    let (_task, d, _fwd) = forwarding(listen(5), vec![rule(80, &target)]).await;
    let t = target.parse().unwrap();
    wait_for(&d, WAIT, "both containers", |d| {
        d.candidates(&t, 80).len() == 2
    })
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    wait_listening(SocketAddr::new(listen(5), 80)).await;
    for _ in 0..8 {
        let body = http_get(SocketAddr::new(listen(5), 80), "/").await.unwrap();
        *seen.entry(served_by(&body)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen.get(&c1), Some(&4), "{seen:?}");
    assert_eq!(seen.get(&c2), Some(&4), "{seen:?}");
}

#[tokio::test]
#[ignore = "needs root and a Docker engine (builds the test image)"]
async fn undeclared_port_is_refused_and_proxy_header_passes_unchanged() {
    let mut scratch = Containers::default();
    let (svc, c) = service_container(&mut scratch, "pp").await;
    let ports = vec![
        rule(80, &format!("docker:{svc}:8080")),
        PortRule {
            proxy_protocol: true,
            ..rule(7000, &format!("docker:{svc}:9000"))
        },
    ];
    let (_task, d, fwd) = forwarding(listen(6), ports).await;
    assert_eq!(fwd.ports(), [80, 7000]);
    let policies = fwd.port_policies().await;
    assert_eq!(
        policies
            .iter()
            .map(|p| (p.port, p.proxy_protocol))
            .collect::<Vec<_>>(),
        [(80, false), (7000, true)]
    );
    let t = format!("docker:{svc}:8080").parse().unwrap();
    wait_for(&d, WAIT, "the container", |d| {
        !d.candidates(&t, 80).is_empty()
    })
    .await;

    wait_listening(SocketAddr::new(listen(6), 80)).await;
    wait_listening(SocketAddr::new(listen(6), 7000)).await;
    for port in [22, 81, 8080, 9000] {
        let err = TcpStream::connect(SocketAddr::new(listen(6), port))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "port {port}"
        );
    }

    // A PROXY v2 header and payload reach the raw echo and come back byte for byte.
    let mut sent = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    sent.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 18, 0, 9, 10, 0, 0, 2, 0x9c, 0x40, 0, 80,
    ]);
    sent.extend((0..100_000u32).map(|i| (i % 253) as u8));
    let mut s = TcpStream::connect(SocketAddr::new(listen(6), 7000))
        .await
        .unwrap();
    s.write_all(&sent).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "bytes changed on the way");

    // And the HTTP service sees the client the header announced.
    let mut s = TcpStream::connect(SocketAddr::new(listen(6), 80))
        .await
        .unwrap();
    s.write_all(b"PROXY TCP4 198.18.0.9 10.0.0.2 40000 80\r\nGET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["proxy"]["source"], "198.18.0.9:40000");
    assert_eq!(v["server"], c.as_str());
}

#[tokio::test]
#[ignore = "needs root and a Docker engine (builds the test image)"]
async fn engine_unreachable_keeps_forwarding_and_recovers() {
    prepare();
    let mut scratch = Containers::default();
    let socket = std::env::temp_dir().join(format!("{}.sock", unique("engine")));
    let mut proxy = SocketRelay::new(&socket);
    let (p1, p2) = (unique_port(), unique_port());
    let (c1, c2) = (unique("eng"), unique("eng"));
    start_labelled(&mut scratch, &c1, PORT_LABEL, format!("{p1}:8080")).await;
    let task = discovery_on(socket.clone());
    let d = task.discovery();
    let ports = vec![rule(p1, "docker-label"), rule(p2, "docker-label")];
    let fwd = forwarder(listen(7), ports, &d).await;
    wait_for(&d, WAIT, "the first container", |d| {
        d.containers().iter().any(|c| c.name == c1)
    })
    .await;
    assert_eq!(d.engine_state(), EngineState::Reachable);

    proxy.stop();
    wait_for(&d, WAIT, "the engine to be reported unreachable", |d| {
        matches!(d.engine_state(), EngineState::Unreachable { .. })
    })
    .await;
    let EngineState::Unreachable { error } = d.engine_state() else {
        unreachable!()
    };
    assert!(
        error.contains(&socket.display().to_string()),
        "error does not name the socket: {error}"
    );
    // The known container still serves; one started meanwhile is not known yet.
    assert_eq!(served_through(SocketAddr::new(listen(7), p1)).await, c1);
    start_labelled(&mut scratch, &c2, PORT_LABEL, format!("{p2}:8080")).await;
    expect_reset(SocketAddr::new(listen(7), p2)).await;
    assert_eq!(
        fwd.port_states().await[1],
        PortState {
            port: p2,
            up: false
        }
    );

    proxy.start();
    wait_for(
        &d,
        WAIT,
        "the engine to be back with the new container",
        |d| {
            d.engine_state() == EngineState::Reachable
                && d.containers().iter().any(|c| c.name == c2)
        },
    )
    .await;
    assert_eq!(served_through(SocketAddr::new(listen(7), p2)).await, c2);
    assert_eq!(fwd.port_states().await[1], PortState { port: p2, up: true });
}
