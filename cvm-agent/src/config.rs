//! The agent's configuration file, `agent.toml`.
//!
//! ```toml
//! app_id = "deadbeef111111111111111111111111"
//! gateways = ["https://gw.example.com:8443"]   # tried in order
//! state_dir = "/var/lib/tee-gateway-agent"
//!
//! [attestation]
//! backend = "auto"                              # auto, tdx, sev-snp, sim-tdx, sim-snp
//! gateway_policy = "/etc/tee-gateway/gateway-policy.toml"
//! # tdx_collateral_dir = "/etc/tee-gateway/tdx-collateral"   # for a TDX gateway's quotes without collateral
//!
//! [docker]                                    # only used when a port has a Docker target
//! socket = "/var/run/docker.sock"
//!
//! [forwarding]
//! probe_interval_ms = 2000                      # fixed-address targets are probed this often (at least 100)
//!
//! [[ports]]
//! port = 8080
//! target = "docker:web:80"
//! proxy_protocol = false
//! ```
//!
//! Unknown keys are errors. [`AgentConfig::problems`] lists every semantic problem at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::control::AppId;
use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the schema (includes unknown keys).
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// Parsed, but inconsistent.
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The app this instance belongs to.
    pub app_id: AppId,
    /// Gateway control URLs (`https://host:port`), tried in order.
    pub gateways: Vec<String>,
    /// Where the agent keeps its instance id across restarts.
    pub state_dir: PathBuf,
    /// The agent's own attestation and its policy for gateways.
    pub attestation: AgentAttestation,
    /// The agent's tunnel endpoint.
    #[serde(default)]
    pub tunnel: AgentTunnel,
    /// Registration timing.
    #[serde(default)]
    pub registration: RegistrationTiming,
    /// The Docker engine that Docker targets are discovered through.
    #[serde(default)]
    pub docker: AgentDocker,
    /// The port forwarder.
    #[serde(default)]
    pub forwarding: AgentForwarding,
    /// The ports the instance exposes through the gateway.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

/// The Docker engine the agent follows (only contacted when some port has a Docker target).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentDocker {
    /// Path of the Docker Engine API's Unix socket.
    pub socket: PathBuf,
}

impl Default for AgentDocker {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(crate::docker::DEFAULT_SOCKET),
        }
    }
}

/// Shortest accepted `forwarding.probe_interval_ms`.
pub const MIN_PROBE_INTERVAL_MS: u64 = 100;

/// Settings of the port forwarder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentForwarding {
    /// How often a fixed-address (`HOST:PORT`) target is probed with a TCP connect, in milliseconds (at least
    /// 100). While it does not accept, the port's listener is closed (connection attempts are refused) and the
    /// port is reported down.
    pub probe_interval_ms: u64,
}

impl Default for AgentForwarding {
    fn default() -> Self {
        Self {
            probe_interval_ms: crate::forward::DEFAULT_PROBE_INTERVAL.as_millis() as u64,
        }
    }
}

impl AgentForwarding {
    /// The probe interval.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
}

/// Which attester produces the agent's evidence (`auto`, `tdx`, `sev-snp`, `sim-tdx`, `sim-snp`).
pub use attestation::attester::Backend;

/// The agent's attestation settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAttestation {
    /// Which attester produces the agent's evidence.
    #[serde(default)]
    pub backend: Backend,
    /// The policy acceptable gateways must satisfy.
    pub gateway_policy: PathBuf,
    /// Simulated vendor PKIs whose roots are trusted (empty: only real vendor roots).
    #[serde(default)]
    pub trusted_sim_roots: Vec<PathBuf>,
    /// The simulated PKI that signs the agent's evidence (required with a `sim-*` backend).
    #[serde(default)]
    pub sim_pki: Option<PathBuf>,
    /// Lifetime of the agent's RA-TLS certificate, in seconds (at least 60); it is renewed when a quarter of it
    /// remains.
    #[serde(default = "default_cert_validity")]
    pub certificate_validity_secs: u64,
    /// Simulated measurement for `sim-*` backends (hex); default all zeros.
    #[serde(default)]
    pub sim_measurement: Option<String>,
    /// A directory of Intel TDX collateral files (`tdx-<FMSPC>-<ca>.json`, e.g. fetched from a PCCS) used to verify
    /// peers' TDX evidence that carries no collateral of its own. Evidence carrying collateral does not need it.
    #[serde(default)]
    pub tdx_collateral_dir: Option<PathBuf>,
}

fn default_cert_validity() -> u64 {
    3600
}

/// Shortest accepted `attestation.certificate_validity_secs`.
pub const MIN_CERT_VALIDITY_SECS: u64 = 60;

/// Shortest accepted `tunnel.handshake_timeout_secs`.
pub const MIN_HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// The agent's WireGuard endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentTunnel {
    /// Name of the TUN device.
    pub interface: String,
    /// UDP port (0: any free port).
    pub listen_port: u16,
    /// MTU of the TUN device.
    pub mtu: u16,
    /// Register again when the tunnel showed no life (no handshake, nothing from the gateway) for this long, in
    /// seconds (at least 10; never less than three of the gateway's keep-alive intervals plus 5 s at run time).
    pub handshake_timeout_secs: u64,
}

impl Default for AgentTunnel {
    fn default() -> Self {
        Self {
            interface: "tga0".into(),
            listen_port: 0,
            mtu: 1420,
            handshake_timeout_secs: 180,
        }
    }
}

/// Registration retry timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationTiming {
    /// First retry delay after a failure, in milliseconds.
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Time allowed for one registration attempt (connect, handshake, answer), in seconds.
    pub attempt_timeout_secs: u64,
}

impl Default for RegistrationTiming {
    fn default() -> Self {
        Self {
            retry_initial_ms: 1000,
            retry_max_ms: 60_000,
            attempt_timeout_secs: 10,
        }
    }
}

impl RegistrationTiming {
    /// The first retry delay.
    pub fn retry_initial(&self) -> Duration {
        Duration::from_millis(self.retry_initial_ms)
    }
    /// The longest retry delay.
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
    /// The per-attempt timeout.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_secs(self.attempt_timeout_secs)
    }
}

/// One exposed port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The port on the tunnel address.
    pub port: u16,
    /// Where connections to the port go (`HOST:PORT`, `docker:SERVICE:PORT`, ...).
    pub target: String,
    /// Whether the gateway sends a PROXY protocol v2 header on this port.
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl AgentConfig {
    /// Reads, parses and checks a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(config)
    }

    /// Parses TOML text without semantic checks.
    pub fn parse(text: &str) -> Result<Self, Box<toml::de::Error>> {
        toml::from_str(text).map_err(Box::new)
    }

    /// Every semantic problem, as messages a person can act on.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.gateways.is_empty() {
            p.push("gateways: at least one gateway control URL is required".to_string());
        }
        for g in &self.gateways {
            if let Err(why) = crate::client::GatewayUrl::parse(g) {
                p.push(format!("gateways: {g:?}: {why}"));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            p.push("state_dir is empty".into());
        }
        let a = &self.attestation;
        if !a.gateway_policy.is_file() {
            p.push(format!(
                "attestation.gateway_policy: {} is not a readable file",
                a.gateway_policy.display()
            ));
        }
        match (&a.sim_pki, a.backend.is_simulated()) {
            (None, true) => p.push("attestation.sim_pki is required with a sim-* backend".into()),
            (Some(_), false) => {
                p.push("attestation.sim_pki is only used with a sim-* backend; remove it".into())
            }
            _ => {}
        }
        if let Some(dir) = &a.tdx_collateral_dir {
            if !dir.is_dir() {
                p.push(format!(
                    "attestation.tdx_collateral_dir: {} is not a directory",
                    dir.display()
                ));
            }
        }
        if a.sim_measurement.is_some() && !a.backend.is_simulated() {
            p.push(
                "attestation.sim_measurement is only used with a sim-* backend; remove it".into(),
            );
        }
        if let Err(e) =
            attestation::attester::select::sim_measurement_bytes(a.sim_measurement.as_deref())
        {
            p.push(format!("attestation.{e}"));
        }
        if a.certificate_validity_secs < MIN_CERT_VALIDITY_SECS {
            p.push(format!(
                "attestation.certificate_validity_secs = {} is below {MIN_CERT_VALIDITY_SECS}",
                a.certificate_validity_secs
            ));
        }
        let t = &self.tunnel;
        if t.interface.is_empty() || t.interface.len() > 15 {
            p.push(format!(
                "tunnel.interface {:?} is not a valid interface name (1-15 characters)",
                t.interface
            ));
        }
        if !(1280..=9000).contains(&t.mtu) {
            p.push(format!("tunnel.mtu = {} is outside 1280..=9000", t.mtu));
        }
        if t.handshake_timeout_secs < MIN_HANDSHAKE_TIMEOUT_SECS {
            p.push(format!(
                "tunnel.handshake_timeout_secs = {} is below {MIN_HANDSHAKE_TIMEOUT_SECS}",
                t.handshake_timeout_secs
            ));
        }
        let r = &self.registration;
        if r.retry_initial_ms == 0 || r.retry_max_ms < r.retry_initial_ms {
            p.push(
                "registration: retry_initial_ms must be positive and at most retry_max_ms".into(),
            );
        }
        if r.attempt_timeout_secs == 0 {
            p.push("registration.attempt_timeout_secs must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for port in &self.ports {
            if port.port == 0 {
                p.push("ports: port 0 is not a valid port".into());
            }
            if !seen.insert(port.port) {
                p.push(format!(
                    "ports: port {} is declared more than once",
                    port.port
                ));
            }
            if port.target.trim().is_empty() {
                p.push(format!("ports: port {} has an empty target", port.port));
            } else if let Err(e) = port.target.parse::<crate::target::Target>() {
                p.push(format!(
                    "ports: port {} target {:?}: {e}",
                    port.port, port.target
                ));
            }
        }
        if self.forwarding.probe_interval_ms < MIN_PROBE_INTERVAL_MS {
            p.push(format!(
                "forwarding.probe_interval_ms = {} is below {MIN_PROBE_INTERVAL_MS}",
                self.forwarding.probe_interval_ms
            ));
        }
        if self.docker.socket.as_os_str().is_empty() {
            p.push("docker.socket is empty".into());
        }
        if self.ports.len() > protocol::control::MAX_PORTS {
            p.push(format!(
                "ports: at most {} ports may be declared",
                protocol::control::MAX_PORTS
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_refuses_unknown_keys() {
        let text = r#"
app_id = "DEADBEEF111111111111111111111111"
gateways = ["https://198.18.0.2:8443"]
state_dir = "/tmp/x"
[attestation]
gateway_policy = "/nonexistent"
[[ports]]
port = 8080
target = "127.0.0.1:8080"
"#;
        let c = AgentConfig::parse(text).unwrap();
        assert_eq!(c.app_id.as_str(), "deadbeef111111111111111111111111");
        assert_eq!(c.tunnel.handshake_timeout_secs, 180);
        assert_eq!(
            c.docker.socket,
            PathBuf::from(crate::docker::DEFAULT_SOCKET)
        );
        assert_eq!(c.registration.retry_max(), Duration::from_secs(60));
        assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
        assert!(c.problems()[0].contains("gateway_policy"));
        let e =
            AgentConfig::parse(&text.replace("[attestation]", "[attestation]\nbakend = \"tdx\""))
                .unwrap_err();
        assert!(e.to_string().contains("bakend"), "{e}");
        assert!(AgentConfig::parse(&text.replace("DEADBEEF", "nothex!!")).is_err());
        let c = AgentConfig::parse(&format!("{text}[docker]\nsocket = \"/run/docker.sock\"\n"))
            .unwrap();
        assert_eq!(c.docker.socket, PathBuf::from("/run/docker.sock"));
        assert!(AgentConfig::parse(&format!("{text}[docker]\nsock = \"/x\"\n")).is_err());
        assert_eq!(c.forwarding.probe_interval(), Duration::from_secs(2));
        let c =
            AgentConfig::parse(&format!("{text}[forwarding]\nprobe_interval_ms = 500\n")).unwrap();
        assert_eq!(c.forwarding.probe_interval(), Duration::from_millis(500));
        assert!(
            AgentConfig::parse(&format!("{text}[forwarding]\nprobe_interval = 500\n")).is_err()
        );
    }

    #[test]
    fn lists_every_problem() {
        let text = r#"
app_id = "deadbeef"
gateways = ["http://plain:80", "https://ok.example:8443"]
state_dir = ""
[attestation]
backend = "sim-snp"
gateway_policy = "/nonexistent"
tdx_collateral_dir = "/nonexistent/tdx-collateral"
[tunnel]
mtu = 10
[[ports]]
port = 80
target = ""
[[ports]]
port = 80
target = "x:1"
[[ports]]
port = 81
target = "docker:web"
[docker]
socket = ""
[forwarding]
probe_interval_ms = 99
"#;
        let p = AgentConfig::parse(text).unwrap().problems().join("\n");
        for needle in [
            "http://plain",
            "state_dir",
            "sim_pki",
            "tdx_collateral_dir: /nonexistent/tdx-collateral is not a directory",
            "mtu",
            "more than once",
            "empty target",
            "port 81 target \"docker:web\"",
            "docker.socket",
            "forwarding.probe_interval_ms = 99 is below 100",
        ] {
            assert!(p.contains(needle), "missing {needle}:\n{p}");
        }
        assert!(!p.contains("ok.example"), "{p}");
    }
}
