//! Shared set-up of the lab tests that run the gateway and agents as real processes: one test's world (scratch
//! files, the simulated PKI, policies, configuration files), the programs started inside the lab's hosts, what
//! the gateway's registry holds, and reaching an agent's forwarded port through its tunnel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use attestation::policy::{GatewayPolicy, PolicyFn};
use attestation::ratls::{self, CertOptions, RaTlsIdentity, RaTlsVerifier};
use attestation::{SimSnpAttester, TrustAnchors, Verifier};
// Each test binary uses some of these.
#[allow(unused_imports)]
pub(crate) use test_support::configs::{
    measurement, AgentConfig, GatewayConfig, Port, CONTROL_PORT, WG_PORT,
};
#[allow(unused_imports)]
pub(crate) use test_support::logs::unix_now;
use test_support::{clients, configs, logs, pki, wait_for, Host, Lab, Process, Scratch};

/// The app of the registration tests (the agents' default in [`AgentConfig`]), the first of the lab's apps: its id
/// is derived from its owner's key ([`configs::lab_owner`]).
pub(crate) const APP: &str = configs::LAB_APPS[0].0;
/// Where the lab gateway's admin API listens (inside the gateway's host), unless a test configures its own.
pub(crate) const ADMIN_LISTEN: &str = "127.0.0.1:9445";
/// The lab gateway's admin bearer token.
pub(crate) const ADMIN_TOKEN: &str = "lab-owner-upload-token-0123456789";
/// The measurement the policies allow (every program's default).
pub(crate) const GOOD: &str = "aa";
/// A measurement no policy allows.
pub(crate) const BAD: &str = "bb";
/// The port the agents forward to `127.0.0.1:7000` by default.
pub(crate) const FORWARDED: u16 = 7000;

/// One test's world: scratch files, the simulated PKI, the policies, and the paths of everything.
pub(crate) struct World {
    /// Every file of the test.
    pub scratch: Scratch,
    /// The app the app policy is about.
    pub app: String,
    /// The programs' `RUST_LOG`.
    pub rust_log: &'static str,
    /// The version of the owner's app policy last signed.
    policy_version: std::cell::Cell<u64>,
}

impl World {
    /// A fresh world named `name` for [`APP`]: see [`World::for_app`].
    pub(crate) fn new(name: &str) -> Self {
        Self::for_app(name, APP)
    }

    /// The lab, brought up, and [`World::new`] named `name`: the start of every lab test.
    pub(crate) fn in_lab(name: &str) -> (Lab, Self) {
        (Lab::up().unwrap(), Self::new(name))
    }

    /// A fresh world named `name`: the simulated PKI, the operator's apps file (listing nothing), the owner's signed
    /// app policy (version 1) allowing `app` with [`GOOD`] that the agents carry, and a gateway policy accepting
    /// gateways with [`GOOD`]; the programs log at `info`.
    pub(crate) fn for_app(name: &str, app: &str) -> Self {
        let scratch = Scratch::new(name);
        pki::write_sim_pki(&scratch.path("pki"));
        let w = Self {
            scratch,
            app: app.into(),
            rust_log: "info",
            policy_version: std::cell::Cell::new(0),
        };
        write(&w.scratch.path("apps.toml"), &configs::operator_apps());
        w.write_app_policy(&[GOOD]);
        w.write_gateway_policy(GOOD);
        w
    }

    /// The directory of every file.
    pub(crate) fn dir(&self) -> &Path {
        self.scratch.dir()
    }

    /// The simulated PKI's directory.
    pub(crate) fn pki(&self) -> PathBuf {
        self.scratch.path("pki")
    }

    /// The owner signs the next version of the app policy, the world's app allowing the listed measurements, into
    /// `app-policy.json` (the file agents carry); returns its path.
    pub(crate) fn write_app_policy(&self, allowed: &[&str]) -> PathBuf {
        let version = self.policy_version.get() + 1;
        self.policy_version.set(version);
        let path = self.scratch.path("app-policy.json");
        write(
            &path,
            &configs::signed_app_policy(&self.app, version, allowed),
        );
        path
    }

    /// [`World::write_app_policy`], then the owner uploads it to the running gateway's admin API
    /// (`PUT /v1/apps/ID/policy`, from inside the gateway's host); returns the answer's JSON.
    pub(crate) fn publish_app_policy(&self, lab: &Lab, allowed: &[&str]) -> serde_json::Value {
        let path = self.write_app_policy(allowed);
        self.upload_app_policy(lab, &path).unwrap()
    }

    /// Uploads the signed policy at `path` to the gateway's admin API: the answer's JSON (an error's too).
    pub(crate) fn upload_app_policy(&self, lab: &Lab, path: &Path) -> Result<serde_json::Value> {
        let url = format!("http://{ADMIN_LISTEN}/v1/apps/{}/policy", self.app);
        let out = lab.run(
            Host::Gateway,
            &[
                "curl",
                "-sS",
                "-X",
                "PUT",
                "-H",
                &format!("Authorization: Bearer {ADMIN_TOKEN}"),
                "--data-binary",
                &format!("@{}", path.display()),
                &url,
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        serde_json::from_str(&text).with_context(|| format!("admin API answer {text:?}"))
    }

    /// The agents' gateway policy `gateway-policy.toml`: gateways with measurement `allowed`.
    pub(crate) fn write_gateway_policy(&self, allowed: &str) {
        self.write_gateway_policy_to("gateway-policy.toml", allowed);
    }

    /// A gateway policy file named `file` allowing gateways with measurement `allowed` (sim-snp MEASUREMENT or
    /// sim-tdx MRTD).
    pub(crate) fn write_gateway_policy_to(&self, file: &str, allowed: &str) {
        write(&self.scratch.path(file), &configs::gateway_policy(allowed));
    }

    /// The log file of the program started as `name`.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.scratch.path(&format!("{name}.log"))
    }

    /// The log of `name` so far.
    pub(crate) fn read_log(&self, name: &str) -> String {
        logs::read(&self.log(name))
    }

    /// A guard that prints the ends of the logs of `names` should the test fail.
    pub(crate) fn logs_on_failure(&self, names: &[&str]) -> logs::OnFailure {
        logs::OnFailure::new(names.iter().map(|n| self.log(n)))
    }

    /// Starts `program run --config CONFIG` inside `host` with the world's `RUST_LOG`, its stdout and stderr
    /// appended to `<name>.log`.
    pub(crate) fn start(
        &self,
        lab: &Lab,
        host: Host,
        name: &str,
        program: &str,
        config: &Path,
    ) -> Result<Process> {
        let mut cmd = lab.command(host, test_support::binaries::workspace_binary(program));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", self.rust_log);
        self.spawn_logged(lab, name, cmd)
    }

    /// Starts `cmd` with stdin closed and its stdout and stderr appended to `<name>.log`.
    pub(crate) fn spawn_logged(
        &self,
        lab: &Lab,
        name: &str,
        mut cmd: std::process::Command,
    ) -> Result<Process> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        lab.spawn(cmd)
    }

    /// Writes `config` as `gateway.toml` and starts the gateway in its host, logging to `gateway.log`. Unless
    /// `config` has its own, the gateway gets an admin API on [`ADMIN_LISTEN`] (for the owner's uploads).
    pub(crate) fn start_gateway(&self, lab: &Lab, config: &GatewayConfig) -> Result<Process> {
        let mut config = config.clone();
        if !config.proxy_extra.contains("[proxy.admin]") {
            let token = self.scratch.path("admin-token");
            write(&token, ADMIN_TOKEN);
            config.proxy_extra += &format!(
                "\n[proxy.admin]\nlisten = \"{ADMIN_LISTEN}\"\ntoken_file = \"{}\"\n",
                token.display()
            );
        }
        let path = config.write(self.dir());
        self.start(lab, Host::Gateway, "gateway", "gateway", &path)
    }

    /// Writes `config` as `agent-NAME.toml` and starts agent `name` in `host`, logging to `NAME.log`.
    pub(crate) fn start_agent(
        &self,
        lab: &Lab,
        host: Host,
        name: &str,
        config: &AgentConfig,
    ) -> Result<Process> {
        let path = config.write(self.dir(), name);
        self.start(lab, host, name, "cvm-agent", &path)
    }

    /// Starts the gateway with [`GatewayConfig::default`] (see [`World::start_gateway`]).
    pub(crate) fn default_gateway(&self, lab: &Lab) -> Process {
        self.start_gateway(lab, &GatewayConfig::default()).unwrap()
    }

    /// Starts agent `name` in `host` with [`AgentConfig::default`] (see [`World::start_agent`]).
    pub(crate) fn default_agent(&self, lab: &Lab, host: Host, name: &str) -> Process {
        self.start_agent(lab, host, name, &AgentConfig::default())
            .unwrap()
    }

    /// Waits up to 30 s for `name`'s log to contain each of `needles`; panics with the log when it does not.
    pub(crate) fn wait_log_with(&self, name: &str, what: &str, needles: &[&str]) {
        wait_for(Duration::from_secs(30), what, || {
            let log = self.read_log(name);
            Ok(needles.iter().all(|n| log.contains(n)).then_some(()))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{name} log:\n{}", self.read_log(name)));
    }

    /// The registry as the gateway stored it.
    pub(crate) fn registry(&self) -> Vec<gateway::registry::InstanceRecord> {
        use gateway::registry::RegistryStore;
        match gateway::registry::SqliteStore::open(&self.scratch.path("registry.sqlite")) {
            Ok(mut s) => s.load_all().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The instance the registry holds for tunnel address `addr`.
    pub(crate) fn instance_at(&self, addr: &str) -> Option<gateway::registry::InstanceRecord> {
        self.registry()
            .into_iter()
            .find(|r| r.tunnel_address.to_string() == addr)
    }

    /// The instance the registry holds with instance id `id`.
    pub(crate) fn instance(&self, id: &str) -> Option<gateway::registry::InstanceRecord> {
        self.registry()
            .into_iter()
            .find(|r| r.instance_id.as_str() == id)
    }

    /// The instance id agent `name` keeps in its state directory (once it has one).
    pub(crate) fn instance_id(&self, name: &str) -> Result<String> {
        let path = self.scratch.path(&format!("state-{name}/instance-id"));
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// The lines of `name`'s log that contain `needle`, with their times.
    pub(crate) fn lines_with(&self, name: &str, needle: &str) -> Vec<(f64, String)> {
        logs::lines_with(&self.log(name), needle)
    }

    /// Whether `name`'s log has a line containing `needle` logged at or after `since` (Unix seconds).
    pub(crate) fn logged_since(&self, name: &str, needle: &str, since: f64) -> bool {
        self.lines_with(name, needle)
            .iter()
            .any(|(t, _)| *t >= since)
    }

    /// Waits until `name`'s log has a line containing `needle` logged after `after` (Unix seconds); its time.
    pub(crate) fn wait_line_after(
        &self,
        name: &str,
        needle: &str,
        after: f64,
        timeout: Duration,
    ) -> Result<(f64, String)> {
        logs::wait_line_after(&self.log(name), needle, after, timeout)
    }

    /// [`World::wait_line_after`] with a timeout of `secs` seconds; panics when no such line comes.
    pub(crate) fn wait_line(
        &self,
        name: &str,
        needle: &str,
        after: f64,
        secs: u64,
    ) -> (f64, String) {
        self.wait_line_after(name, needle, after, Duration::from_secs(secs))
            .unwrap()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A gateway configuration under which every registration in a test has another cause than the schedule:
/// re-registration every 10 minutes.
pub(crate) fn rare_reregistration() -> GatewayConfig {
    GatewayConfig {
        reregister_secs: 600,
        ..GatewayConfig::default()
    }
}

/// The usual stack of a lab test: the gateway, one agent and the TCP server it forwards to, the agent's tunnel
/// reachable. Dropping it stops the agent, the gateway and the server (in that order), and prints the ends of
/// the gateway's and the agent's logs should the test fail.
pub(crate) struct Stack {
    /// The agent.
    pub agent: Process,
    /// The gateway.
    pub gateway: Process,
    /// The one-line TCP server behind the agent's forwarded port.
    pub server: Process,
    /// The agent's tunnel address.
    pub addr: String,
    _logs: logs::OnFailure,
}

impl World {
    /// Starts the usual [`Stack`]: a TCP server in `host` answering `hello-from-NAME`, the gateway with
    /// `gateway`, agent `name` in `host` with `agent`; waits up to 20 s for the agent's forwarded port to answer
    /// that through its tunnel from the gateway's host.
    pub(crate) fn start_stack(
        &self,
        lab: &Lab,
        gateway: &GatewayConfig,
        agent: &AgentConfig,
        host: Host,
        name: &str,
    ) -> Stack {
        let reply = &format!("hello-from-{name}");
        let _logs = self.logs_on_failure(&["gateway", name]);
        let server = start_tcp_server(lab, host, reply).unwrap();
        let gateway = self.start_gateway(lab, gateway).unwrap();
        let agent = self.start_agent(lab, host, name, agent).unwrap();
        let addr = tunnel_address(lab, host, name).unwrap();
        wait_reachable(lab, &addr, reply, 20).unwrap();
        Stack {
            agent,
            gateway,
            server,
            addr,
            _logs,
        }
    }

    /// The usual [`Stack`] with re-registration every 10 minutes ([`rare_reregistration`]) and the default agent,
    /// agent `name` in cvm1: every registration after the first has a cause of the test's own.
    pub(crate) fn start_quiet_stack(&self, lab: &Lab, name: &str) -> Stack {
        self.start_stack(
            lab,
            &rare_reregistration(),
            &AgentConfig::default(),
            Host::Cvm1,
            name,
        )
    }
}

/// The tunnel address of agent `name` in `host`: its interface `tga-NAME`, waited for up to 30 s.
pub(crate) fn tunnel_address(lab: &Lab, host: Host, name: &str) -> Result<String> {
    lab.interface_address(host, &format!("tga-{name}"), Duration::from_secs(30))
}

/// The default agent configuration with attestation `backend` and simulated `measurement`.
pub(crate) fn agent_config(backend: &str, measurement: &str) -> AgentConfig {
    AgentConfig {
        backend: backend.into(),
        measurement: measurement.into(),
        ..AgentConfig::default()
    }
}

/// Starts a one-line TCP server in `host` on 127.0.0.1:7000 (the agents' `[[ports]]` target) that answers each
/// connection with `reply`. It listens on loopback only, so the tunnel address reaches it only through the
/// agent's port forwarder.
pub(crate) fn start_tcp_server(lab: &Lab, host: Host, reply: &str) -> Result<Process> {
    clients::start_line_server(lab, host, FORWARDED, reply)
}

/// Connects from `host` to `addr:7000` and returns the first line answered.
pub(crate) fn fetch(lab: &Lab, host: Host, addr: &str) -> Result<String> {
    clients::fetch_line(lab, host, addr, FORWARDED)
}

/// Waits up to `secs` seconds until `addr:7000` (through its tunnel) answers `expected` from the gateway's host;
/// returns how long that took.
pub(crate) fn wait_reachable(lab: &Lab, addr: &str, expected: &str, secs: u64) -> Result<Duration> {
    let (host, timeout) = (Host::Gateway, Duration::from_secs(secs));
    let start = std::time::Instant::now();
    wait_for(
        timeout,
        &format!("{addr}:7000 reachable from {}", host.name()),
        || match fetch(lab, host, addr) {
            Ok(got) if got == expected => Ok(Some(())),
            Ok(got) => bail!("{addr}:7000 answered {got:?}, expected {expected:?}"),
            Err(e) => Err(e),
        },
    )
    .context("tunnel reachability")?;
    Ok(start.elapsed())
}

/// Connects from `host` to `addr:port` and returns `connected` or the Python exception's name
/// (`ConnectionRefusedError`, `TimeoutError`, ...).
pub(crate) fn connect_outcome(lab: &Lab, host: Host, addr: &str, port: u16) -> Result<String> {
    Ok(clients::connect_outcome(lab, host, addr, port)?.0)
}

/// A registration request of `instance` of [`APP`] with WireGuard key `key`, declaring port 7000 and carrying the
/// owner's first policy (allowing [`GOOD`], as [`World::for_app`] signs it).
pub(crate) fn register_request(
    instance: &protocol::control::InstanceId,
    key: protocol::control::PublicKey,
) -> protocol::control::RegisterRequest {
    protocol::control::RegisterRequest {
        version: protocol::control::PROTOCOL_VERSION,
        app_id: APP.parse().unwrap(),
        instance_id: instance.clone(),
        wireguard_public_key: key,
        ports: vec![protocol::control::PortPolicy::plain(FORWARDED)],
        app_policy: Some(configs::signed_app_policy(APP, 1, &[GOOD])),
    }
}

/// A random WireGuard public key.
pub(crate) fn random_key() -> protocol::control::PublicKey {
    protocol::control::PublicKey::from_bytes(rand::random()).unwrap()
}

/// The gateway's control URL in the lab.
pub(crate) fn control_url() -> cvm_agent::client::GatewayUrl {
    cvm_agent::client::GatewayUrl::parse(&format!(
        "https://{}:{CONTROL_PORT}",
        Host::Gateway.addr()
    ))
    .unwrap()
}

/// The target state the registry holds for `port` of the instance at tunnel address `addr`.
pub(crate) fn reported_state(
    world: &World,
    addr: &str,
    port: u16,
) -> Option<protocol::control::TargetState> {
    world
        .instance_at(addr)?
        .ports
        .into_iter()
        .find(|p| p.port == port)?
        .target_state
}

/// A mutual RA-TLS client configuration for a test client registering from the root namespace: sim-snp evidence
/// with measurement `GOOD`, accepting gateways as `gateway-policy.toml` says (read once, now).
pub(crate) fn client_tls(world: &World) -> std::sync::Arc<rustls::ClientConfig> {
    use std::sync::Arc;
    let pki = pki::sim_snp();
    let m: [u8; 48] = [0xaa; 48];
    let identity = Arc::new(
        RaTlsIdentity::new(
            Arc::new(SimSnpAttester::new(pki.clone(), m, [0; 32])),
            CertOptions::default(),
        )
        .unwrap(),
    );
    let verifier = Arc::new(Verifier::new(
        TrustAnchors::production()
            .with_sim_snp_ark(pki.ark_der())
            .unwrap(),
    ));
    let policy = GatewayPolicy::from_toml(
        &std::fs::read_to_string(world.scratch.path("gateway-policy.toml")).unwrap(),
    )
    .unwrap();
    let gateways = Arc::new(RaTlsVerifier::new(
        verifier,
        Arc::new(PolicyFn(move |c: &attestation::Claims| {
            policy.check(c).map(|_| ())
        })),
    ));
    Arc::new(ratls::client_config(identity, gateways).unwrap())
}

/// The certificate the control listener presents, as `openssl s_client` from the client host sees it:
/// `serial=...`, `notBefore=...` and `notAfter=...` lines.
pub(crate) fn control_certificate(lab: &Lab) -> Result<String> {
    let script = format!(
        "openssl s_client -connect {}:{CONTROL_PORT} </dev/null 2>/dev/null | openssl x509 -noout -serial -startdate -enddate",
        Host::Gateway.addr()
    );
    let out = lab.run(Host::Client, &["sh", "-c", &script])?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !text.contains("serial=") {
        bail!("no certificate from the control listener: {text:?}");
    }
    Ok(text)
}
