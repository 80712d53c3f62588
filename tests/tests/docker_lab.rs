//! Docker forwarding end to end through the real programs: a `gateway run` in the `gateway` namespace, a
//! `cvm-agent run` in the root namespace (the CVM that runs Docker) whose ports target containers of the test
//! image, and a second `cvm-agent run` in `cvm1` with a process backend for the same app. Clients (curl, openssl,
//! Python grpcio and websockets) run in the `client` namespace and go through the gateway's client listener.
//!
//! One scenario, in order: the inbound port filter; termination, PROXY protocol, passthrough, `g` and WebSocket to
//! the container; a `docker-label` port; two containers of one service; `docker restart`; `docker stop` (fails
//! fast, reported down, the app is served by cvm1 alone); a Docker engine outage (the agent's API socket is a
//! relay the test cuts and restores) and the recovery.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod registration;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use protocol::control::TargetState;
use registration::{AgentConfig, GatewayConfig, Port, World, APP};
use test_support::clients::{self, presented_certificate};
use test_support::docker::{
    docker, prepare, served_by, testserver_from_image, unique, Containers, SocketRelay, IMAGE,
};
use test_support::pki::{CertFiles, WebPki};
use test_support::{wait_for, Host, Lab};

const BASE: &str = "apps.lab.test";
const SERVICE_LABEL: &str = "tee-gateway.service";
const PORT_LABEL: &str = "tee-gateway.port";
const DOCKER_TUN: &str = "tgdock-a";
const CVM1_TUN: &str = "tgdock-c1";
/// The gateway's connect timeout (its default): a refused request must fail well under it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// "Fails fast": curl's start-up and the TLS handshake with the gateway included.
const FAIL_FAST: Duration = Duration::from_secs(2);
/// The port cvm1 listens on with a wildcard address without declaring it.
const UNDECLARED: u16 = 7001;

/// A CA and a wildcard certificate for the base domain (PEM files in `dir`).
fn certificates(dir: &Path) -> (WebPki, CertFiles) {
    let web = WebPki::new(dir, "tee-gateway docker lab CA");
    let cert = web.issue("gw", "tee-gateway docker lab", &[&format!("*.{BASE}")]);
    (web, cert)
}

/// The gateway of this test: its client listener on 443 with the wildcard certificate.
fn gateway_config(cert: CertFiles) -> GatewayConfig {
    GatewayConfig {
        interface: "tgdock-gw".into(),
        network: Some("10.0.0.0/24".into()),
        reregister_secs: 10,
        certificate_validity_secs: None,
        proxy_port: 443,
        certificates: vec![cert],
        ..GatewayConfig::default()
    }
}

/// An agent's configuration: `interface` for its tunnel, `ports`, and `extra` tables (`[docker]`).
fn agent_config(interface: &str, ports: Vec<Port>, extra: String) -> AgentConfig {
    AgentConfig {
        interface: Some(interface.into()),
        certificate_validity_secs: None,
        ports,
        extra,
        ..AgentConfig::default()
    }
}

/// The clients' view: curl, openssl, grpcio and websockets in the client namespace, through the gateway.
struct Clients<'a> {
    lab: &'a Lab,
    ca: PathBuf,
}

/// One answered (or failed) request.
struct Reply {
    ok: bool,
    body: String,
    took: Duration,
}

impl Reply {
    fn server(&self) -> String {
        served_by(&self.body)
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Clients<'_> {
    /// `curl https://NAME/PATH` through the gateway's client listener.
    fn curl(&self, name: &str, path: &str, extra: &[&str]) -> Reply {
        let start = Instant::now();
        let out = self
            .lab
            .command(Host::Client, "curl")
            .args(["-sS", "--max-time", "15", "--cacert"])
            .arg(&self.ca)
            .args(["--resolve", &format!("{name}:443:{}", Host::Gateway.addr())])
            .args(extra)
            .arg(format!("https://{name}{path}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Reply {
            ok: out.status.success(),
            body: if out.status.success() {
                String::from_utf8_lossy(&out.stdout).into_owned()
            } else {
                String::from_utf8_lossy(&out.stderr).into_owned()
            },
            took: start.elapsed(),
        }
    }

    /// Requests `name` until one is answered by `server` (at most `timeout`); returns how long that took.
    fn wait_served_by(&self, name: &str, server: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        wait_for(timeout, &format!("{name} answered by {server}"), || {
            let r = self.curl(name, "/wait", &["--max-time", "5"]);
            if !r.ok {
                bail!("request failed: {}", r.body);
            }
            let got = r.server();
            if got == server {
                Ok(Some(()))
            } else {
                bail!("answered by {got}")
            }
        })?;
        Ok(start.elapsed())
    }

    /// The certificate `openssl s_client` receives for SNI `name` at the gateway, as PEM.
    fn openssl_certificate(&self, name: &str) -> String {
        let gateway = (Host::Gateway.addr(), 443).into();
        presented_certificate(self.lab, Host::Client, gateway, name, &[])
            .unwrap()
            .0
    }

    /// One of the repository's client scripts (`scripts/clients/SCRIPT`) in the client host, trusting the CA:
    /// whether it succeeded, and its stdout (or its error).
    fn python(&self, script: &str, args: &[&str]) -> (bool, String) {
        let ca = self.ca.display().to_string();
        let args = [args, &["--ca", &ca]].concat();
        match clients::python(
            self.lab,
            Host::Client,
            &format!("scripts/clients/{script}"),
            &args,
        ) {
            Ok(out) => (true, out),
            Err(e) => (false, format!("{e:#}")),
        }
    }
}

/// Connects from the gateway's namespace to `addr:port` over the tunnel; returns the outcome (`connected`,
/// `ConnectionRefusedError`, `TimeoutError`, ...) and how long it took.
fn connect_from_gateway(lab: &Lab, addr: &str, port: u16) -> (String, Duration) {
    let start = Instant::now();
    let (outcome, _) = clients::connect_outcome(lab, Host::Gateway, addr, port).unwrap();
    (outcome, start.elapsed())
}

/// The instance id the gateway stored for tunnel address `addr`.
fn instance_at(world: &World, addr: &str) -> Option<String> {
    world
        .instance_at(addr)
        .map(|r| r.instance_id.as_str().to_owned())
}

/// When the instance at tunnel address `addr` last registered (0: not stored).
fn last_seen(world: &World, addr: &str) -> u64 {
    world.instance_at(addr).map_or(0, |r| r.last_seen)
}

fn wait_state(
    world: &World,
    addr: &str,
    port: u16,
    want: TargetState,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    wait_for(
        timeout,
        &format!("{addr} port {port} reported {want:?}"),
        || Ok((registration::reported_state(world, addr, port) == Some(want)).then_some(())),
    )
    .unwrap();
    start.elapsed()
}

/// Starts `cvm-agent run` in the root namespace like [`World::start`], but bound to the test's life: the lab's
/// teardown only reaches processes inside its namespaces, so the agent (and with it its TUN device and route in
/// the root namespace) is killed by the kernel should the test process die without unwinding.
fn start_root_agent(lab: &Lab, world: &World, config: &Path) -> test_support::Process {
    use std::os::unix::process::CommandExt;
    let mut cmd = lab.command(
        Host::Root,
        test_support::binaries::workspace_binary("cvm-agent"),
    );
    cmd.args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info");
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    world.spawn_logged(lab, "docker-agent", cmd).unwrap()
}

#[test]
#[ignore = "needs root, the lab (network namespaces, TUN devices) and a Docker engine"]
fn docker_agent_and_process_agent_through_the_real_gateway() {
    let total = Instant::now();
    prepare();
    let lab = Lab::up().unwrap();
    let start = Instant::now();
    let world = World::new("docker-lab");
    let _logs = world.logs_on_failure(&["gateway", "docker-agent", "cvm1-agent"]);
    let (web, cert) = certificates(world.dir());
    let clients = Clients {
        lab: &lab,
        ca: web.ca_pem.clone(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Containers: two services' worth, all labelled for removal (also on failure).
    let mut containers = Containers::default();
    let svc = unique("svc");
    let c1 = unique("web");
    containers.run(&c1, &[(SERVICE_LABEL, svc.clone())], &[]);
    let labelled = unique("lbl");
    containers.run(&labelled, &[(PORT_LABEL, "9100:8080".into())], &[]);
    rt.block_on(containers.wait_ready(&c1));
    rt.block_on(containers.wait_ready(&labelled));

    // The agent's Docker API socket: a relay the test can cut.
    let mut relay = SocketRelay::new(&world.scratch.path("docker.sock"));

    let _gateway = world.start_gateway(&lab, &gateway_config(cert)).unwrap();

    // The Docker CVM (root namespace).
    let docker_ports = vec![
        Port::to(80, format!("docker:{svc}:8080")),
        Port::to(443, format!("docker:{svc}:8443")),
        Port::to(8000, format!("docker:{svc}:8080")).with_proxy_protocol(),
        Port::to(9100, "docker-label"),
    ];
    let docker_socket = format!("[docker]\nsocket = \"{}\"\n", relay.path().display());
    let docker_config =
        agent_config(DOCKER_TUN, docker_ports, docker_socket).write(world.dir(), "docker");
    let mut docker_agent = start_root_agent(&lab, &world, &docker_config);

    // cvm1: the test server as a process on loopback, plus a wildcard listener on an undeclared port.
    let bin = testserver_from_image(IMAGE, world.dir()).unwrap();
    let mut backend = lab.command(Host::Cvm1, &bin);
    backend
        .args([
            "--http",
            "127.0.0.1:18080",
            "--tls",
            "127.0.0.1:18443",
            "--echo",
            &format!("0.0.0.0:{UNDECLARED}"),
            "--name",
            "cvm1-process",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _backend = lab.spawn(backend).unwrap();
    let cvm1_ports = vec![
        Port::to(80, "127.0.0.1:18080"),
        Port::to(443, "127.0.0.1:18443"),
    ];
    let cvm1_config = agent_config(CVM1_TUN, cvm1_ports, String::new()).write(world.dir(), "cvm1");
    let _cvm1_agent = world
        .start(&lab, Host::Cvm1, "cvm1-agent", "cvm-agent", &cvm1_config)
        .unwrap();

    let docker_addr = lab
        .interface_address(Host::Root, DOCKER_TUN, Duration::from_secs(60))
        .unwrap();
    let cvm1_addr = lab
        .interface_address(Host::Cvm1, CVM1_TUN, Duration::from_secs(60))
        .unwrap();
    for port in [80, 443, 8000, 9100] {
        wait_state(
            &world,
            &docker_addr,
            port,
            TargetState::Up,
            Duration::from_secs(20),
        );
    }
    wait_state(
        &world,
        &cvm1_addr,
        80,
        TargetState::Up,
        Duration::from_secs(20),
    );
    let docker_id = instance_at(&world, &docker_addr).unwrap();
    let cvm1_id = instance_at(&world, &cvm1_addr).unwrap();
    let docker_name = format!("{docker_id}.{BASE}");
    let cvm1_name = format!("{cvm1_id}.{BASE}");
    let app_name = format!("{APP}.{BASE}");
    let booted = start.elapsed();

    // The first requests may wait for the tunnels' handshakes.
    clients
        .wait_served_by(&docker_name, &c1, Duration::from_secs(20))
        .unwrap();
    clients
        .wait_served_by(&cvm1_name, "cvm1-process", Duration::from_secs(20))
        .unwrap();

    // --- The inbound filter: cvm1's wildcard listener on an undeclared port is out of reach of the tunnel.
    let (local, _) = {
        let start = Instant::now();
        let (o, _) = clients::connect_outcome(&lab, Host::Cvm1, &cvm1_addr, UNDECLARED).unwrap();
        (o, start.elapsed())
    };
    assert_eq!(
        local, "connected",
        "the undeclared listener does not listen on the tunnel address"
    );
    let (outcome, refused_in) = connect_from_gateway(&lab, &cvm1_addr, UNDECLARED);
    assert_eq!(
        outcome, "ConnectionRefusedError",
        "undeclared port {UNDECLARED} through the tunnel"
    );
    // python's start-up is most of it: the reset comes back at once.
    assert!(
        refused_in < Duration::from_secs(2),
        "refusal took {refused_in:?}"
    );
    let (outcome, _) = connect_from_gateway(&lab, &cvm1_addr, 80);
    assert_eq!(outcome, "connected", "declared port 80 through the tunnel");
    let (outcome, _) = connect_from_gateway(&lab, &docker_addr, 7000);
    assert_eq!(
        outcome, "ConnectionRefusedError",
        "undeclared port 7000 of the Docker CVM"
    );

    // --- End to end to the container.
    // Termination (http/1.1): the container sees plain HTTP.
    let r = clients.curl(&docker_name, "/terminated", &[]);
    assert!(r.ok, "terminated: {}", r.body);
    assert_eq!(r.server(), c1);
    assert_eq!(
        r.json()["tls"],
        false,
        "the container saw TLS on a terminated route"
    );

    // PROXY protocol: the gateway's header reaches the container and names the real client.
    let r = clients.curl(&format!("{docker_id}-8000.{BASE}"), "/proxied", &[]);
    assert!(r.ok, "PROXY protocol port: {}", r.body);
    let v = r.json();
    assert_eq!(v["server"], c1.as_str());
    assert_eq!(v["proxy"]["version"], 2, "{}", r.body);
    let source = v["proxy"]["source"].as_str().unwrap_or_default();
    assert!(
        source.starts_with(&format!("{}:", Host::Client.addr())),
        "the container saw PROXY source {source:?}, not the client"
    );

    // Passthrough: openssl gets the container's own certificate (the one it serves at /cert.pem).
    let own = clients.curl(&docker_name, "/cert.pem", &[]);
    assert!(own.ok, "/cert.pem: {}", own.body);
    let seen = clients.openssl_certificate(&format!("{docker_id}-443s.{BASE}"));
    assert_eq!(
        seen.trim(),
        own.body.trim(),
        "passthrough did not reach the container's TLS"
    );
    let r = clients.curl(&format!("{docker_id}-443s.{BASE}"), "/passthrough", &["-k"]);
    assert!(r.ok, "passthrough: {}", r.body);
    assert_eq!(r.server(), c1);
    assert_eq!(r.json()["tls"], true);

    // `g`: gRPC with grpcio (h2 terminated at the gateway, h2c to the container).
    let gw = format!("{}:443", Host::Gateway.addr());
    let grpc_name = format!("{docker_id}g.{BASE}");
    let (ok, out) = clients.python(
        "grpc_echo.py",
        &[&gw, "stream", "3", "--tls", "--authority", &grpc_name],
    );
    assert!(ok, "grpc: {out}");
    assert_eq!(out, format!("{c1} 0\n{c1} 1\n{c1} 2\n"));

    // WebSocket through the terminated route.
    let (ok, out) = clients.python(
        "ws_echo.py",
        &[
            &format!("wss://{gw}/ws"),
            "lab",
            "--server-name",
            &docker_name,
        ],
    );
    assert!(ok, "websocket: {out}");
    assert_eq!(out.trim(), c1);

    // `docker-label`: the container labelled for tunnel port 9100.
    let r = clients.curl(&format!("{docker_id}-9100.{BASE}"), "/label", &[]);
    assert!(r.ok, "docker-label port: {}", r.body);
    assert_eq!(r.server(), labelled);

    // --- Two containers of one service: both answer.
    let c2 = unique("web");
    containers.run(&c2, &[(SERVICE_LABEL, svc.clone())], &[]);
    rt.block_on(containers.wait_ready(&c2));
    let mut seen = std::collections::BTreeSet::new();
    wait_for(Duration::from_secs(15), "both containers answering", || {
        let r = clients.curl(&docker_name, "/both", &[]);
        if !r.ok {
            bail!("request failed: {}", r.body);
        }
        seen.insert(r.server());
        Ok((seen.len() == 2).then_some(()))
    })
    .unwrap();
    assert_eq!(seen, [c1.clone(), c2.clone()].into_iter().collect());
    docker(&["rm", "-f", &c2]);

    // --- docker restart: the next request is served, the agent keeps running.
    let before = containers.address(&c1);
    docker(&["restart", "-t", "1", &c1]);
    rt.block_on(containers.wait_ready(&c1));
    let after = containers.address(&c1);
    let after_restart = clients
        .wait_served_by(&docker_name, &c1, Duration::from_secs(10))
        .unwrap();
    assert!(docker_agent.is_running(), "the agent exited");
    assert_eq!(
        world.read_log("docker-agent").matches("boot 1/5").count(),
        1,
        "the agent restarted"
    );

    // --- docker stop: a request to that instance fails fast, the agent reports the port down, and the app is
    // served by cvm1 alone.
    // A request to the stopped container, which must fail: how long it took, and curl's output.
    // Refused after the TLS handshake, the gateway answers 503 naming why: curl's --fail makes that a failure.
    let failing_request = |path: &str| {
        let r = clients.curl(&docker_name, path, &["--fail"]);
        assert!(
            !r.ok,
            "a request to the stopped container succeeded: {}",
            r.body
        );
        (r.took, r.body)
    };
    docker(&["stop", "-t", "1", &c1]);
    let stopped = Instant::now();
    // At once: the agent may not have heard of the stop yet and accept the connection, then reset it as soon
    // as it does.
    let (failed_at_once, body) = failing_request("/stopping");
    assert!(
        failed_at_once < FAIL_FAST,
        "the request right after docker stop took {failed_at_once:?} to fail: {body}"
    );
    // The agent learns of it from the engine's events (within milliseconds) and closes the port: the tunnel
    // refuses connections.
    wait_for(
        Duration::from_secs(10),
        "the agent to close port 80",
        || {
            let (outcome, _) = connect_from_gateway(&lab, &docker_addr, 80);
            Ok((outcome == "ConnectionRefusedError").then_some(()))
        },
    )
    .unwrap();
    let closed = stopped.elapsed();
    let (failed_in, body) = failing_request("/stopped");
    assert!(
        failed_in < FAIL_FAST && failed_in < CONNECT_TIMEOUT / 4,
        "the request took {failed_in:?} to fail: {body}"
    );
    wait_state(
        &world,
        &docker_addr,
        80,
        TargetState::Down,
        Duration::from_secs(10),
    );
    let reported_down = stopped.elapsed();
    for i in 0..10 {
        let r = clients.curl(&app_name, &format!("/app-{i}"), &[]);
        assert!(r.ok, "app request {i}: {}", r.body);
        assert_eq!(r.server(), "cvm1-process", "app request {i}");
    }
    // The other container of the instance is still served.
    let r = clients.curl(&format!("{docker_id}-9100.{BASE}"), "/still", &[]);
    assert!(
        r.ok && r.server() == labelled,
        "docker-label port: {}",
        r.body
    );

    // --- The Docker engine goes away (for this agent): it logs it, keeps tunnel and registration, serves the
    // containers it knew, and picks up what started meanwhile once the engine is back.
    relay.stop();
    let outage = Instant::now();
    let outage_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    wait_for(
        Duration::from_secs(15),
        "the agent to log the outage",
        || {
            Ok(world
                .read_log("docker-agent")
                .contains("Docker engine unreachable")
                .then_some(()))
        },
    )
    .unwrap();
    let c3 = unique("web");
    containers.run(&c3, &[(SERVICE_LABEL, svc.clone())], &[]);
    rt.block_on(containers.wait_ready(&c3));
    // Registration goes on (the gateway asks for it every 10 s).
    wait_for(
        Duration::from_secs(25),
        "a registration during the outage",
        || Ok((last_seen(&world, &docker_addr) > outage_epoch).then_some(())),
    )
    .unwrap();
    assert_eq!(
        registration::reported_state(&world, &docker_addr, 80),
        Some(TargetState::Down),
        "the agent cannot know about the new container yet"
    );
    let r = clients.curl(&format!("{docker_id}-9100.{BASE}"), "/outage", &[]);
    assert!(
        r.ok && r.server() == labelled,
        "known container during the outage: {}",
        r.body
    );
    let r = clients.curl(&app_name, "/outage", &[]);
    assert!(
        r.ok && r.server() == "cvm1-process",
        "app during the outage: {}",
        r.body
    );
    let r = clients.curl(&docker_name, "/outage", &[]);
    assert!(
        !r.ok,
        "the new container was reached without the engine: {}",
        r.body
    );
    assert!(r.took < FAIL_FAST, "took {:?} to fail", r.took);
    let outage_len = outage.elapsed();

    relay.start();
    let back = Instant::now();
    clients
        .wait_served_by(&docker_name, &c3, Duration::from_secs(20))
        .unwrap();
    let recovered = back.elapsed();
    assert!(world
        .read_log("docker-agent")
        .contains("Docker engine reachable again"));
    assert!(docker_agent.is_running(), "the agent exited");

    eprintln!(
        "docker lab: boot {booted:?}; undeclared port refused in {refused_in:?}; restart {before} -> {after} \
         served again after {after_restart:?}; after docker stop a request failed in {failed_at_once:?}, the port \
         closed in {closed:?}, a request then failed in {failed_in:?} (connect timeout {CONNECT_TIMEOUT:?}), reported down after {reported_down:?}; outage {outage_len:?}, recovered in \
         {recovered:?}; {:?} in all, {:?} once the lab was ours",
        total.elapsed(),
        start.elapsed()
    );
}
