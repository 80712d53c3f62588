//! The stack of the proxy lab test: one gateway with its admin API and three agents of one app, their
//! configuration files, and the admin API and metrics read from inside the gateway host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

pub(crate) mod client_hello;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use test_support::clients::{
    admin_answer, admin_args, failures, metric, tally, HttpsClient, Transfer,
};
use test_support::configs::{AgentConfig, GatewayConfig, Port};
use test_support::pki::WebPki;
use test_support::{testserver, Host, Lab, Process};

use crate::registration::World;

/// The app of the three instances.
pub(crate) const APP: &str = test_support::configs::LAB_APPS[1].0;
/// The gateway's base domain.
pub(crate) const BASE: &str = "apps.lab.test";
/// The WireGuard port the blackhole test drops.
pub(crate) use test_support::configs::WG_PORT;
/// The client listener's port.
pub(crate) const CLIENT_PORT: u16 = 443;
/// The admin API's address inside the gateway host.
pub(crate) const ADMIN: &str = "127.0.0.1:9444";
/// The admin API's token.
pub(crate) const ADMIN_TOKEN: &str = "lab-admin-token-0123456789";
/// The gateway's idle timeout; the WebSocket check stays quiet for 60 s, three times as long.
pub(crate) const IDLE_TIMEOUT_SECS: u64 = 20;
/// The gateway's delay before it tries the next instance.
pub(crate) const STAGGER_MS: u64 = 200;
/// The gateway's connection limit per app.
pub(crate) const MAX_PER_APP: usize = 16;
/// The agents' port with a PROXY protocol v2 header (to the same testserver port as 8080).
pub(crate) const PROXIED_PORT: u16 = 8081;
/// The gateway's ClientHello deadline.
pub(crate) const CLIENT_HELLO_TIMEOUT_MS: u64 = 3000;

/// The instances' hosts and names.
pub(crate) const CVMS: [(Host, &str); 3] = [
    (Host::Cvm1, "cvm1"),
    (Host::Cvm2, "cvm2"),
    (Host::Cvm3, "cvm3"),
];

/// Everything one run of the stack needs on disk: the world (simulated attestation PKI, policies, logs), the web
/// PKI, and the configuration files of the gateway and the agents.
pub(crate) struct Stack {
    /// The files, the programs' logs and the registry.
    pub world: World,
    /// The CA of the client listener's certificate.
    pub web: WebPki,
}

impl Stack {
    /// Writes every file of the stack.
    pub(crate) fn new() -> Stack {
        let mut world = World::for_app("proxy-lab", APP);
        world.rust_log = "info,gateway::proxy=debug,cvm_agent::forward=debug";
        let dir = world.dir().to_path_buf();
        let token = world.scratch.path("admin-token");
        std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).unwrap();
        let web = WebPki::new(&world.scratch.path("web"), "tee-gateway lab CA");
        let cert = web.issue("wildcard", "lab gateway", &[&format!("*.{BASE}")]);
        GatewayConfig {
            base_domain: BASE.into(),
            interface: "tgpx0".into(),
            network: None,
            reregister_secs: 10,
            health_window_secs: None,
            expire_after_secs: None,
            certificate_validity_secs: None,
            proxy_port: CLIENT_PORT,
            certificates: vec![cert],
            proxy_extra: format!(
                "idle_timeout_secs = {IDLE_TIMEOUT_SECS}\nclient_hello_timeout_ms = {CLIENT_HELLO_TIMEOUT_MS}\n\
                 connect_stagger_ms = {STAGGER_MS}\nmax_connections_per_app = {MAX_PER_APP}\n\
                 [proxy.admin]\nlisten = \"{ADMIN}\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
            ..GatewayConfig::default()
        }
        .write(&dir);
        for (_, name) in CVMS {
            AgentConfig {
                app_id: APP.into(),
                interface: Some(format!("tgpx-{name}")),
                handshake_timeout_secs: None,
                certificate_validity_secs: None,
                ports: vec![
                    Port::to(testserver::HTTP, format!("127.0.0.1:{}", testserver::HTTP)),
                    Port::to(PROXIED_PORT, format!("127.0.0.1:{}", testserver::HTTP))
                        .with_proxy_protocol(),
                    Port::to(testserver::TLS, format!("127.0.0.1:{}", testserver::TLS)),
                    Port::to(testserver::ECHO, format!("127.0.0.1:{}", testserver::ECHO)),
                ],
                ..AgentConfig::default()
            }
            .write(&dir, name);
        }
        Stack { world, web }
    }

    /// The log of the program started as `name`.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.world.log(name)
    }

    /// Starts the gateway in its host.
    pub(crate) fn start_gateway(&self, lab: &Lab) -> Result<Process> {
        let config = self.world.scratch.path("gateway.toml");
        self.world
            .start(lab, Host::Gateway, "gateway", "gateway", &config)
    }

    /// Starts agent `name` in `host`.
    pub(crate) fn start_agent(&self, lab: &Lab, host: Host, name: &str) -> Result<Process> {
        let config = self.world.scratch.path(&format!("agent-{name}.toml"));
        self.world.start(lab, host, name, "cvm-agent", &config)
    }

    /// The target state the registry holds for `port` of instance `id`.
    pub(crate) fn target_state(
        &self,
        id: &str,
        port: u16,
    ) -> Option<protocol::control::TargetState> {
        self.world
            .instance(id)?
            .ports
            .into_iter()
            .find(|p| p.port == port)?
            .target_state
    }

    /// The tunnel address the registry holds for instance `id`.
    pub(crate) fn tunnel_address(&self, id: &str) -> Option<std::net::Ipv4Addr> {
        self.world.instance(id).map(|r| r.tunnel_address)
    }
}

/// Whether a TCP connection from the gateway host straight to `addr` (an instance's tunnel address and port,
/// through the tunnel) is refused: curl's exit status 7, "could not connect" (a timeout is 28).
pub(crate) fn refused_from_gateway(lab: &Lab, addr: SocketAddr) -> Result<bool> {
    let status = lab
        .command(Host::Gateway, "curl")
        .args(["-s", "-o", "/dev/null", "--connect-timeout", "3"])
        .args(["--max-time", "5", &format!("http://{addr}/")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    match status.code() {
        Some(7) => Ok(true),
        Some(0) => Ok(false),
        code => bail!("curl http://{addr}/ from the gateway host: exit status {code:?}"),
    }
}

/// One admin API request from inside the gateway host; returns status and body.
pub(crate) fn admin(lab: &Lab, method: &str, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{ADMIN}{path}");
    let out = lab
        .command(Host::Gateway, "curl")
        .args(admin_args(method, &url, Some(ADMIN_TOKEN)))
        .stdin(Stdio::null())
        .output()?;
    admin_answer(&out).with_context(|| format!("admin {method} {path}"))
}

/// The gateway's metrics, from the admin API.
pub(crate) fn metrics(lab: &Lab) -> Result<String> {
    let (code, body) = admin(lab, "GET", "/metrics")?;
    if code != 200 {
        bail!("GET /metrics answered {code}: {body}");
    }
    Ok(body)
}

/// The refusal counters and open connections, for failure messages.
pub(crate) fn refusal_summary(lab: &Lab) -> String {
    match metrics(lab) {
        Ok(text) => text
            .lines()
            .filter(|l| {
                l.starts_with("tee_gateway_refusals_total")
                    || l.starts_with("tee_gateway_active_connections")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("no metrics: {e:#}"),
    }
}

/// The value of `series` in Prometheus text, 0 when absent.
pub(crate) fn counter(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// The instance's `drained` flag as the admin API lists it.
pub(crate) fn drained(lab: &Lab, id: &str) -> Result<Option<bool>> {
    let (code, body) = admin(lab, "GET", "/v1/instances")?;
    if code != 200 {
        bail!("GET /v1/instances answered {code}: {body}");
    }
    let list: serde_json::Value = serde_json::from_str(&body)?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["instance_id"] == id)
        .and_then(|i| i["drained"].as_bool()))
}

/// Starts a Python script of the repository in `host` with its stdout and stderr piped.
pub(crate) fn spawn_python(lab: &Lab, host: Host, script: &str, args: &[&str]) -> Result<Process> {
    let mut cmd = test_support::clients::python_command(lab, host, script, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    lab.spawn(cmd)
}

/// The certificate (PEM) that `openssl s_client` in the client host is shown for `name` through the gateway,
/// verified against `ca_file` with host name `verify_name`, and the whole output.
pub(crate) fn verified_certificate(
    lab: &Lab,
    gateway: SocketAddr,
    name: &str,
    ca_file: &std::path::Path,
    verify_name: &str,
) -> Result<(String, String)> {
    let ca = ca_file.display().to_string();
    test_support::clients::presented_certificate(
        lab,
        Host::Client,
        gateway,
        name,
        &[
            "-verify_hostname",
            verify_name,
            "-verify_return_error",
            "-CAfile",
            &ca,
        ],
    )
}

/// Runs `n` GETs of `/` on `name` on new connections, `parallel` at a time, and checks that every one was
/// answered; returns the transfers and how many each server answered.
pub(crate) fn all_served(
    lab: &Lab,
    client: &HttpsClient,
    name: &str,
    n: usize,
    parallel: usize,
) -> (Vec<Transfer>, BTreeMap<String, usize>) {
    let results = client.many(name, "/", n, parallel).unwrap();
    let counts = tally(&results);
    assert_eq!(
        counts.get(""),
        None,
        "{counts:?} {:?}\n{}",
        failures(&results),
        refusal_summary(lab)
    );
    (results, counts)
}
