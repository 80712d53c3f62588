//! Shared set-up of the registration lab tests: a simulated AMD PKI, policies, configuration files, and the
//! gateway and agents started as real processes inside the lab's namespaces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use attestation::policy::{GatewayPolicy, PolicyFn};
use attestation::ratls::{self, CertOptions, RaTlsIdentity, RaTlsVerifier};
use attestation::{SimSnpAttester, SimSnpPki, TrustAnchors, Verifier};
use tee_gateway_tests::{wait_for, Host, Lab, Process};

pub const APP: &str = "deadbeef111111111111111111111111";
pub const GOOD: &str = "aa";
pub const BAD: &str = "bb";
pub const CONTROL_PORT: u16 = 8443;
pub const WG_PORT: u16 = 51820;

/// A measurement of 48 bytes, all `byte` (given as two hex digits).
pub fn measurement(byte: &str) -> String {
    byte.repeat(48)
}

/// A built binary of the workspace (built on demand when missing).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    BUILT.get_or_init(|| {
        if !dir.join("gateway").exists() || !dir.join("cvm-agent").exists() {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "gateway", "-p", "cvm-agent", "--bins"])
                .status()
                .unwrap();
            assert!(
                status.success(),
                "building the gateway and agent binaries failed"
            );
        }
    });
    path
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the simulated PKI (once per process; RSA key generation is slow).
pub fn write_pki(dir: &Path) {
    static PKI: OnceLock<SimSnpPki> = OnceLock::new();
    PKI.get_or_init(|| SimSnpPki::generate_small("tee-gateway registration tests").unwrap())
        .write_pem(dir)
        .unwrap();
    attestation::tdx::SimTdxPki::from_seed(b"tee-gateway registration tests")
        .unwrap()
        .write_to(dir, std::time::SystemTime::now())
        .unwrap();
}

/// The gateway settings a test may change (the defaults are those of every other registration test).
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub network: &'static str,
    pub reregister_secs: u64,
    pub expire_after_secs: u64,
    pub certificate_validity_secs: u64,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            network: "10.0.0.0/8",
            reregister_secs: 20,
            expire_after_secs: 3600,
            certificate_validity_secs: 3600,
        }
    }
}

/// The agent settings a test may change.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub handshake_timeout_secs: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub certificate_validity_secs: u64,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            handshake_timeout_secs: 30,
            retry_initial_ms: 200,
            retry_max_ms: 2000,
            certificate_validity_secs: 3600,
        }
    }
}

/// One test's world: scratch files, the PKI, policies, and the paths of everything.
pub struct World {
    pub scratch: Scratch,
}

impl World {
    pub fn new(name: &str) -> Self {
        let scratch = Scratch::new(name);
        write_pki(&scratch.path("pki"));
        let w = Self { scratch };
        w.write_app_policy(&[GOOD]);
        w.write_gateway_policy(GOOD);
        w
    }

    pub fn pki(&self) -> PathBuf {
        self.scratch.path("pki")
    }

    /// The app policy: `APP` allows the listed measurements.
    pub fn write_app_policy(&self, allowed: &[&str]) {
        let mut text = String::new();
        for m in allowed {
            text += &format!(
                "[[apps.{APP}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n\n",
                measurement(m)
            );
            text += &format!(
                "[[apps.{APP}.profile]]\nplatform = \"sim-tdx\"\nmr_td = [\"{}\"]\n\n",
                measurement(m)
            );
        }
        std::fs::write(self.scratch.path("apps.toml"), text).unwrap();
    }

    /// The agents' gateway policy `gateway-policy.toml`: gateways with measurement `allowed`.
    pub fn write_gateway_policy(&self, allowed: &str) {
        self.write_gateway_policy_to("gateway-policy.toml", allowed);
    }

    /// A gateway policy file named `file` allowing gateways with measurement `allowed` (sim-snp MEASUREMENT or
    /// sim-tdx MRTD).
    pub fn write_gateway_policy_to(&self, file: &str, allowed: &str) {
        let text = format!(
            "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{m}\"\n\n\
             [[profile]]\nplatform = \"sim-tdx\"\nmr_td = [\"{m}\"]\n",
            m = measurement(allowed)
        );
        std::fs::write(self.scratch.path(file), text).unwrap();
    }

    /// The gateway's configuration; its own sim-snp evidence carries measurement `gateway_measurement`.
    pub fn gateway_config(&self, gateway_measurement: &str) -> PathBuf {
        self.gateway_config_with(gateway_measurement, "sim-snp")
    }

    /// The gateway's configuration with attestation `backend` (`sim-snp` or `sim-tdx`).
    pub fn gateway_config_with(&self, gateway_measurement: &str, backend: &str) -> PathBuf {
        self.gateway_config_opts(gateway_measurement, backend, &GatewayOptions::default())
    }

    /// The gateway's configuration with attestation `backend` and the timings and network of `o`.
    pub fn gateway_config_opts(
        &self,
        gateway_measurement: &str,
        backend: &str,
        o: &GatewayOptions,
    ) -> PathBuf {
        let text = format!(
            r#"base_domains = ["apps.lab.test"]
[control]
listen = "{gw}:{CONTROL_PORT}"
rate_limit_per_sec = 1000
rate_limit_burst = 1000
[tunnel]
listen_port = {WG_PORT}
public_endpoint = "{gw}:{WG_PORT}"
interface = "tgreg0"
network = "{network}"
reregister_secs = {reregister}
keepalive_secs = 2
health_window_secs = 30
[registry]
path = "{db}"
expire_after_secs = {expire}
[attestation]
backend = "{backend}"
app_policy = "{policy}"
trusted_sim_roots = ["{pki}"]
sim_pki = "{pki}"
sim_measurement = "{m}"
certificate_validity_secs = {validity}
[proxy]
listen = ["{gw}:9443"]
"#,
            gw = Host::Gateway.addr(),
            db = self.scratch.path("registry.sqlite").display(),
            policy = self.scratch.path("apps.toml").display(),
            pki = self.pki().display(),
            m = measurement(gateway_measurement),
            network = o.network,
            reregister = o.reregister_secs,
            expire = o.expire_after_secs,
            validity = o.certificate_validity_secs,
        );
        let path = self.scratch.path("gateway.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// An agent's configuration (state directory per `name`); its evidence carries `agent_measurement`.
    pub fn agent_config(
        &self,
        name: &str,
        agent_measurement: &str,
        gateway_policy: &str,
        backend: &str,
    ) -> PathBuf {
        self.agent_config_opts(
            name,
            agent_measurement,
            gateway_policy,
            backend,
            &AgentOptions::default(),
        )
    }

    /// An agent's configuration with the timings of `o`.
    pub fn agent_config_opts(
        &self,
        name: &str,
        agent_measurement: &str,
        gateway_policy: &str,
        backend: &str,
        o: &AgentOptions,
    ) -> PathBuf {
        let text = format!(
            r#"app_id = "{APP}"
gateways = ["https://{gw}:{CONTROL_PORT}"]
state_dir = "{state}"
[attestation]
backend = "{backend}"
gateway_policy = "{gp}"
trusted_sim_roots = ["{pki}"]
sim_pki = "{pki}"
sim_measurement = "{m}"
certificate_validity_secs = {validity}
[tunnel]
interface = "tga-{name}"
handshake_timeout_secs = {handshake}
[registration]
retry_initial_ms = {initial}
retry_max_ms = {max}
attempt_timeout_secs = 5
[[ports]]
port = 7000
target = "127.0.0.1:7000"
"#,
            gw = Host::Gateway.addr(),
            state = self.scratch.path(&format!("state-{name}")).display(),
            gp = self.scratch.path(gateway_policy).display(),
            pki = self.pki().display(),
            m = measurement(agent_measurement),
            validity = o.certificate_validity_secs,
            handshake = o.handshake_timeout_secs,
            initial = o.retry_initial_ms,
            max = o.retry_max_ms,
        );
        let path = self.scratch.path(&format!("agent-{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.scratch.path(&format!("{name}.log"))
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    /// Starts a program inside `host` with stdout and stderr appended to `<name>.log`.
    pub fn start(
        &self,
        lab: &Lab,
        host: Host,
        name: &str,
        program: &str,
        config: &Path,
    ) -> Result<Process> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))?;
        let mut cmd = lab.command(host, binary(program));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        lab.spawn(cmd)
    }

    pub fn start_gateway(&self, lab: &Lab, measurement: &str) -> Result<Process> {
        let config = self.gateway_config(measurement);
        self.start(lab, Host::Gateway, "gateway", "gateway", &config)
    }

    /// Starts the gateway with attestation `backend` (`sim-snp` or `sim-tdx`).
    pub fn start_gateway_with(
        &self,
        lab: &Lab,
        measurement: &str,
        backend: &str,
    ) -> Result<Process> {
        let config = self.gateway_config_with(measurement, backend);
        self.start(lab, Host::Gateway, "gateway", "gateway", &config)
    }

    /// Starts the gateway (sim-snp evidence with `measurement`) with the options `o`.
    pub fn start_gateway_opts(
        &self,
        lab: &Lab,
        measurement: &str,
        o: &GatewayOptions,
    ) -> Result<Process> {
        let config = self.gateway_config_opts(measurement, "sim-snp", o);
        self.start(lab, Host::Gateway, "gateway", "gateway", &config)
    }

    /// Starts a sim-snp agent with the default gateway policy and the options `o`.
    pub fn start_agent_opts(
        &self,
        lab: &Lab,
        host: Host,
        name: &str,
        measurement: &str,
        o: &AgentOptions,
    ) -> Result<Process> {
        let config = self.agent_config_opts(name, measurement, "gateway-policy.toml", "sim-snp", o);
        self.start(lab, host, name, "cvm-agent", &config)
    }

    pub fn start_agent(
        &self,
        lab: &Lab,
        host: Host,
        name: &str,
        measurement: &str,
    ) -> Result<Process> {
        self.start_agent_with(
            lab,
            host,
            name,
            measurement,
            "gateway-policy.toml",
            "sim-snp",
        )
    }

    pub fn start_agent_with(
        &self,
        lab: &Lab,
        host: Host,
        name: &str,
        measurement: &str,
        gateway_policy: &str,
        backend: &str,
    ) -> Result<Process> {
        let config = self.agent_config(name, measurement, gateway_policy, backend);
        self.start(lab, host, name, "cvm-agent", &config)
    }

    /// The registry as the gateway stored it.
    pub fn registry(&self) -> Vec<gateway::registry::InstanceRecord> {
        use gateway::registry::RegistryStore;
        match gateway::registry::SqliteStore::open(&self.scratch.path("registry.sqlite")) {
            Ok(mut s) => s.load_all().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// The IPv4 address of `interface` inside `host`, once it exists.
pub fn tunnel_address(lab: &Lab, host: Host, interface: &str, timeout: Duration) -> Result<String> {
    wait_for(timeout, &format!("{interface} in {}", host.name()), || {
        let out = lab
            .command(host, "ip")
            .args(["-o", "-4", "addr", "show", "dev", interface])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next())
            .map(str::to_owned))
    })
}

/// Starts a one-line TCP server in `host` on 127.0.0.1:7000 (the agents' `[[ports]]` target) that answers each
/// connection with `reply`. It listens on loopback only, so the tunnel address reaches it only through the
/// agent's port forwarder.
pub fn start_tcp_server(lab: &Lab, host: Host, reply: &str) -> Result<Process> {
    let script = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('127.0.0.1',7000))\ns.listen(16)\nwhile True:\n  c,_=s.accept()\n  c.sendall(b'{reply}\\n')\n  c.close()\n"
    );
    let mut cmd = lab.command(host, "python3");
    cmd.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn(cmd)
}

/// Connects from `host` to `addr:7000` and returns the first line answered.
pub fn fetch(lab: &Lab, host: Host, addr: &str) -> Result<String> {
    let script = format!(
        "import socket\ns=socket.create_connection(('{addr}',7000),timeout=3)\nprint(s.makefile().readline().strip())\n"
    );
    let out = lab
        .command(host, "python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "connecting to {addr}:7000 from {}: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until `addr:7000` answers `expected` from `host`.
pub fn wait_reachable(
    lab: &Lab,
    host: Host,
    addr: &str,
    expected: &str,
    timeout: Duration,
) -> Result<Duration> {
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

/// Connects from `host` to `addr:port` and returns the Python exception's name (`ConnectionRefusedError`,
/// `TimeoutError`, ...) or `connected`.
pub fn connect_outcome(lab: &Lab, host: Host, addr: &str, port: u16) -> Result<String> {
    let script = format!(
        "import socket\ntry:\n  socket.create_connection(('{addr}',{port}),timeout=3)\n  print('connected')\n\
         except OSError as e:\n  print(type(e).__name__)\n"
    );
    let out = lab
        .command(host, "python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The target state the registry holds for `port` of the instance at tunnel address `addr`.
pub fn reported_state(
    world: &World,
    addr: &str,
    port: u16,
) -> Option<protocol::control::TargetState> {
    world
        .registry()
        .into_iter()
        .find(|r| r.tunnel_address.to_string() == addr)?
        .ports
        .into_iter()
        .find(|p| p.port == port)?
        .target_state
}

/// A mutual RA-TLS client configuration for a test client registering from the root namespace: sim-snp evidence
/// with measurement `GOOD`, accepting gateways as `gateway-policy.toml` says (read once, now).
pub fn client_tls(world: &World) -> std::sync::Arc<rustls::ClientConfig> {
    use std::sync::Arc;
    let pki = Arc::new(SimSnpPki::load_pem(&world.pki()).unwrap());
    let m: [u8; 48] = [0xaa; 48];
    let identity = Arc::new(
        RaTlsIdentity::new(
            Arc::new(SimSnpAttester::new(pki, m, [0; 32])),
            CertOptions::default(),
        )
        .unwrap(),
    );
    let ark = std::fs::read(world.pki().join(attestation::snp::sim::files::ARK)).unwrap();
    let verifier = Arc::new(Verifier::new(
        TrustAnchors::production().with_sim_snp_ark(&ark).unwrap(),
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

/// Unix time in seconds (with fractions) of a log line that starts with tracing's RFC 3339 UTC timestamp
/// (`2026-01-02T03:04:05.678901Z`).
pub fn line_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss = t.next()?.parse::<f64>().ok()?;
    // Days since 1970-01-01 of the date (proleptic Gregorian calendar, counted in eras of 400 years).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// The current Unix time in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl World {
    /// The lines of `name`'s log that contain `needle`, with their times.
    pub fn lines_with(&self, name: &str, needle: &str) -> Vec<(f64, String)> {
        self.read_log(name)
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| Some((line_time(l)?, l.to_string())))
            .collect()
    }

    /// Waits until `name`'s log has a line containing `needle` logged after `after` (Unix seconds); its time.
    pub fn wait_line_after(
        &self,
        name: &str,
        needle: &str,
        after: f64,
        timeout: Duration,
    ) -> Result<(f64, String)> {
        wait_for(
            timeout,
            &format!("{needle:?} in {name}'s log after {after:.3}"),
            || {
                Ok(self
                    .lines_with(name, needle)
                    .into_iter()
                    .find(|(t, _)| *t > after))
            },
        )
    }
}

/// Drops every UDP packet to and from `port` inside a lab host (an nftables table of its own), until dropped.
pub struct UdpBlock<'a> {
    lab: &'a Lab,
    host: Host,
}

const BLOCK_TABLE: &str = "tg_test_udp_block";

impl<'a> UdpBlock<'a> {
    pub fn new(lab: &'a Lab, host: Host, port: u16) -> Result<Self> {
        let block = Self { lab, host };
        let port = port.to_string();
        lab.run(host, &["nft", "add", "table", "inet", BLOCK_TABLE])?;
        for (chain, hook, dir) in [("out", "output", "dport"), ("in", "input", "sport")] {
            lab.run(
                host,
                &[
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    BLOCK_TABLE,
                    chain,
                    "{",
                    "type",
                    "filter",
                    "hook",
                    hook,
                    "priority",
                    "0",
                    ";",
                    "}",
                ],
            )?;
            lab.run(
                host,
                &[
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    BLOCK_TABLE,
                    chain,
                    "udp",
                    dir,
                    &port,
                    "drop",
                ],
            )?;
        }
        Ok(block)
    }
}

impl Drop for UdpBlock<'_> {
    fn drop(&mut self) {
        if let Err(e) = self
            .lab
            .run(self.host, &["nft", "delete", "table", "inet", BLOCK_TABLE])
        {
            eprintln!("removing the UDP block: {e:#}");
        }
    }
}

/// The certificate the control listener presents, as `openssl s_client` from the client host sees it:
/// `serial=...`, `notBefore=...` and `notAfter=...` lines.
pub fn control_certificate(lab: &Lab) -> Result<String> {
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
