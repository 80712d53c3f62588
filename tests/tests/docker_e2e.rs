//! End to end with a real container: client (curl, grpcio, websockets in the `client` namespace) -> gateway proxy
//! (in the `gateway` namespace) -> WireGuard tunnel (`protocol::tunnel` endpoints) -> the agent's forwarder in the
//! root namespace (the CVM that runs Docker) -> a test-server container. A second instance in `cvm1` serves from a
//! process backend.
//!
//! The gateway's instance table is a `StaticDirectory` that the test fills from the agents' port reports
//! (`Forwarder::port_policies`), leaving out ports reported down as the registry does.

#[path = "../../cvm-agent/tests/support/mod.rs"]
mod docker_support;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cvm_agent::docker::{DiscoveryConfig, DiscoveryTask};
use cvm_agent::forward::{ForwardConfig, Forwarder, PortRule};
use cvm_agent::target::SERVICE_LABEL;
use docker_support::{docker, prepare, unique, wait_for, wait_listening, Scratch};
use gateway::proxy::config::ProxyConfig;
use gateway::proxy::directory::StaticDirectory;
use gateway::proxy::server::Proxy;
use gateway::proxy::tls::CertificateFiles;
use protocol::control::TargetState;
use tee_gateway_tests::tunnel::{peer_arg, ping, EndpointProc, KeyPair, TempDir};
use tee_gateway_tests::{Host, Lab};

const TUNNEL_BIN: &str = env!("CARGO_BIN_EXE_tunnel-endpoint");
const BASE: &str = "apps.test";
const APP: &str = "a1b2c3d4e5f60718";
const DOCKER_INSTANCE: &str = "d0c0e000000000000001";
const CVM1_INSTANCE: &str = "c0000000000000000001";
const AGENT_ADDR: &str = "10.0.0.2";
const CVM1_ADDR: &str = "10.0.0.3";
/// A refused request must fail well under the gateway's connect timeout (10 s by default); curl's own start-up
/// and the TLS handshake are included.
const FAIL_FAST: Duration = Duration::from_secs(3);

/// Runs `f` on a thread of its own inside the network namespace `ns`, with its own runtime.
fn spawn_in_netns<F, Fut>(ns: &'static str, f: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: setns on a valid namespace descriptor affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns into {ns}: {}",
            std::io::Error::last_os_error()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f());
    })
}

/// A CA and a wildcard certificate for the base domain, as PEM files.
fn certificates(dir: &TempDir) -> (PathBuf, CertificateFiles) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tee-gateway e2e CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![format!("*.{BASE}")])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let files = CertificateFiles {
        cert: dir.path().join("gw.pem"),
        key: dir.path().join("gw.key"),
    };
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (ca_path, files)
}

/// The static test server binary (built by `scripts/build-test-image.sh`), for the process backend in cvm1.
fn testserver_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/x86_64-unknown-linux-gnu/release/testserver");
    if !bin.exists() {
        let ok = std::process::Command::new(root.join("scripts/build-test-image.sh"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "building the test server failed");
    }
    bin
}

/// `curl` from the client host to the gateway with SNI `name`; returns (success, body, seconds taken).
fn curl(lab: &Lab, ca: &Path, name: &str, path: &str, extra: &[&str]) -> (bool, String, Duration) {
    let start = Instant::now();
    let mut cmd = lab.command(Host::Client, "curl");
    cmd.args(["-sS", "--max-time", "15", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:443:{}", Host::Gateway.addr())])
        .args(extra)
        .arg(format!("https://{name}{path}"));
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        start.elapsed(),
    )
}

fn server_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    v["server"].as_str().unwrap_or_default().to_owned()
}

/// Publishes an agent's report to the gateway's table the way the registry does: ports reported down are
/// not offered to clients.
async fn publish(directory: &StaticDirectory, instance: &str, addr: &str, fwd: &Forwarder) {
    let ports: Vec<(u16, bool)> = fwd
        .port_policies()
        .await
        .into_iter()
        .filter(|p| p.target_state != Some(TargetState::Down))
        .map(|p| (p.port, p.proxy_protocol))
        .collect();
    directory.upsert(APP, instance, addr.parse().unwrap(), ports);
}

#[test]
fn client_to_container_through_gateway_tunnel_and_agent() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    prepare();
    let lab = Lab::up().unwrap();
    let dir = TempDir::new("docker-e2e").unwrap();
    let (ca, cert_files) = certificates(&dir);

    // Tunnel: gateway 10.0.0.1 in its namespace, the Docker CVM's agent 10.0.0.2 in the root namespace, cvm1
    // 10.0.0.3.
    let gw_key = KeyPair::generate(&dir, "gateway").unwrap();
    let agent_key = KeyPair::generate(&dir, "agent").unwrap();
    let cvm1_key = KeyPair::generate(&dir, "cvm1").unwrap();
    let gw_endpoint = format!("endpoint={}:51820", Host::Gateway.addr());
    let _gw = EndpointProc::start(
        &lab,
        Host::Gateway,
        Path::new(TUNNEL_BIN),
        &gw_key,
        &[
            "--address=10.0.0.1/24".into(),
            "--tun-name=tgwe2e0".into(),
            peer_arg(&agent_key.public, AGENT_ADDR, &[]),
            peer_arg(&cvm1_key.public, CVM1_ADDR, &[]),
        ],
    )
    .unwrap();
    let _agent_tunnel = EndpointProc::start(
        &lab,
        Host::Root,
        Path::new(TUNNEL_BIN),
        &agent_key,
        &[
            format!("--address={AGENT_ADDR}/24"),
            "--tun-name=tgwdocker0".into(),
            "--listen-port=0".into(),
            peer_arg(
                &gw_key.public,
                "10.0.0.1",
                &[&gw_endpoint, "keepalive-ms=25000"],
            ),
        ],
    )
    .unwrap();
    let _cvm1_tunnel = EndpointProc::start(
        &lab,
        Host::Cvm1,
        Path::new(TUNNEL_BIN),
        &cvm1_key,
        &[
            format!("--address={CVM1_ADDR}/24"),
            "--tun-name=tgwe2e1".into(),
            peer_arg(
                &gw_key.public,
                "10.0.0.1",
                &[&gw_endpoint, "keepalive-ms=25000"],
            ),
        ],
    )
    .unwrap();
    assert!(
        ping(&lab, Host::Root, "10.0.0.1", 2),
        "agent tunnel is down"
    );
    assert!(ping(&lab, Host::Cvm1, "10.0.0.1", 2), "cvm1 tunnel is down");

    // cvm1's process backend.
    let mut backend = lab.command(Host::Cvm1, testserver_binary());
    backend.args([
        "--http",
        "0.0.0.0:80",
        "--tls",
        "0.0.0.0:443",
        "--echo",
        "0.0.0.0:9000",
        "--name",
        "cvm1-process",
    ]);
    backend
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _backend = lab.spawn(backend).unwrap();

    // The container in the root namespace.
    let mut scratch = Scratch::default();
    let svc = unique("svc");
    let name = unique("e2e");
    let rt = tokio::runtime::Runtime::new().unwrap();
    scratch.run(&name, &[(SERVICE_LABEL, svc.clone())], &[]);
    rt.block_on(scratch.wait_ready(&name));

    // The agent's forwarder on its tunnel address (ports 80, 443 and 8000 with PROXY protocol; 7000 is not
    // declared).
    let discovery = rt.block_on(async { DiscoveryTask::spawn(DiscoveryConfig::default()) });
    let d = discovery.discovery();
    let rule = |port, target: String| PortRule {
        port,
        target: target.parse().unwrap(),
        proxy_protocol: false,
    };
    let fwd = rt
        .block_on(Forwarder::start(
            ForwardConfig::new(
                AGENT_ADDR.parse::<IpAddr>().unwrap(),
                vec![
                    rule(80, format!("docker:{svc}:8080")),
                    rule(443, format!("docker:{svc}:8443")),
                    PortRule {
                        proxy_protocol: true,
                        ..rule(8000, format!("docker:{svc}:8080"))
                    },
                ],
            ),
            Some(d.clone()),
        ))
        .unwrap();
    let t80 = format!("docker:{svc}:8080").parse().unwrap();
    rt.block_on(wait_for(
        &d,
        Duration::from_secs(10),
        "the container",
        |d| !d.candidates(&t80, 80).is_empty(),
    ));

    // The gateway proxy in the gateway namespace.
    let directory = Arc::new(StaticDirectory::new());
    rt.block_on(publish(&directory, DOCKER_INSTANCE, AGENT_ADDR, &fwd));
    // The gateway also offers port 7000 of the Docker CVM, which its agent does not declare.
    let mut offered: Vec<(u16, bool)> =
        vec![(80, false), (443, false), (8000, true), (7000, false)];
    directory.upsert(
        APP,
        DOCKER_INSTANCE,
        AGENT_ADDR.parse().unwrap(),
        offered.clone(),
    );
    directory.upsert(
        APP,
        CVM1_INSTANCE,
        CVM1_ADDR.parse().unwrap(),
        [(80, false), (443, false)],
    );
    let config = ProxyConfig {
        listen: vec![SocketAddr::new(Host::Gateway.addr().into(), 443)],
        certificates: vec![cert_files],
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(
        config,
        &[BASE.to_owned()],
        Duration::from_secs(300),
        directory.clone(),
    )
    .unwrap();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let gateway_thread = spawn_in_netns("gateway", move || async move {
        let listeners = proxy.bind().await.unwrap();
        ready_tx.send(()).unwrap();
        proxy.run(listeners, shutdown_rx).await;
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let docker_name = format!("{DOCKER_INSTANCE}.{BASE}");

    // Termination (http/1.1), addressed to the Docker instance.
    let (ok, body, _) = curl(&lab, &ca, &docker_name, "/terminated", &[]);
    assert!(ok, "terminated request failed: {body}");
    assert_eq!(server_of(&body), name);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["tls"], false,
        "the container saw TLS on a terminated route"
    );

    // PROXY protocol: the header the gateway sends reaches the container, naming the real client.
    let (ok, body, _) = curl(
        &lab,
        &ca,
        &format!("{DOCKER_INSTANCE}-8000.{BASE}"),
        "/proxied",
        &[],
    );
    assert!(ok, "PROXY protocol request failed: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["server"], name.as_str());
    assert_eq!(v["proxy"]["version"], 2, "{body}");
    let source = v["proxy"]["source"].as_str().unwrap_or_default();
    assert!(
        source.starts_with(&format!("{}:", Host::Client.addr())),
        "the container saw PROXY source {source:?}, not the client"
    );

    // Passthrough: the container's own TLS answers (its certificate is self-signed, hence -k).
    let (ok, body, _) = curl(
        &lab,
        &ca,
        &format!("{DOCKER_INSTANCE}-443s.{BASE}"),
        "/passthrough",
        &["-k"],
    );
    assert!(ok, "passthrough request failed: {body}");
    assert_eq!(server_of(&body), name);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["tls"], true,
        "passthrough did not reach the container's TLS"
    );

    // gRPC over `g` (h2 terminated at the gateway, h2c to the container) with grpcio.
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/clients");
    let grpc_name = format!("{DOCKER_INSTANCE}g.{BASE}");
    let mut grpc = lab.command(Host::Client, "python3");
    grpc.arg(clients.join("grpc_echo.py"))
        .args([
            &format!("{}:443", Host::Gateway.addr()),
            "stream",
            "3",
            "--tls",
            "--authority",
            &grpc_name,
        ])
        .arg("--ca")
        .arg(&ca);
    let out = grpc.output().unwrap();
    assert!(
        out.status.success(),
        "grpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{name} 0\n{name} 1\n{name} 2\n")
    );

    // WebSocket through the terminated route.
    let mut ws = lab.command(Host::Client, "python3");
    ws.arg(clients.join("ws_echo.py"))
        .args([
            &format!("wss://{}:443/ws", Host::Gateway.addr()),
            "e2e",
            "--server-name",
            &docker_name,
        ])
        .arg("--ca")
        .arg(&ca);
    let out = ws.output().unwrap();
    assert!(
        out.status.success(),
        "websocket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);

    // An undeclared port is refused at the agent: the gateway reaches the agent over the tunnel on 80 but
    // gets a refusal on 7000, and the client's request fails fast.
    assert!(lab.succeeds(
        Host::Gateway,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "http://10.0.0.2:80/"
        ]
    ));
    let out = lab
        .command(Host::Gateway, "curl")
        .args(["-sS", "--max-time", "5", "http://10.0.0.2:7000/"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "port 7000: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _, took) = curl(
        &lab,
        &ca,
        &format!("{DOCKER_INSTANCE}-7000.{BASE}"),
        "/",
        &[],
    );
    assert!(!ok, "a request to an undeclared port succeeded");
    assert!(took < FAIL_FAST, "undeclared port took {took:?}");
    offered.retain(|(p, _)| *p != 7000);
    directory.upsert(APP, DOCKER_INSTANCE, AGENT_ADDR.parse().unwrap(), offered);

    // docker restart: the next request succeeds, without touching the agent.
    docker(&["restart", "-t", "1", &name]);
    rt.block_on(scratch.wait_ready(&name));
    rt.block_on(wait_for(
        &d,
        Duration::from_secs(10),
        "the restarted container",
        |d| !d.candidates(&t80, 80).is_empty(),
    ));
    rt.block_on(wait_listening(SocketAddr::new(
        AGENT_ADDR.parse().unwrap(),
        80,
    )));
    let (ok, body, _) = curl(&lab, &ca, &docker_name, "/after-restart", &[]);
    assert!(ok, "request after restart failed: {body}");
    assert_eq!(server_of(&body), name);

    // docker stop: a request to the Docker instance fails fast...
    docker(&["stop", "-t", "1", &name]);
    rt.block_on(wait_for(
        &d,
        Duration::from_secs(10),
        "the stopped container",
        |d| d.candidates(&t80, 80).is_empty(),
    ));
    let (ok, _, took) = curl(&lab, &ca, &docker_name, "/stopped", &[]);
    assert!(!ok, "a request to a stopped container succeeded");
    // With no container the agent stops listening on the port, so the gateway's connection is refused at once.
    assert!(took < FAIL_FAST, "stopped container took {took:?} to fail");
    // ...and after the agent's next report the app is served by the instance whose target is up.
    rt.block_on(publish(&directory, DOCKER_INSTANCE, AGENT_ADDR, &fwd));
    for i in 0..4 {
        let (ok, body, _) = curl(
            &lab,
            &ca,
            &format!("{APP}.{BASE}"),
            &format!("/app-{i}"),
            &[],
        );
        assert!(ok, "app request {i} failed: {body}");
        assert_eq!(server_of(&body), "cvm1-process");
    }

    shutdown.send(true).unwrap();
    gateway_thread.join().unwrap();
    drop(fwd);
    drop(discovery);
}
