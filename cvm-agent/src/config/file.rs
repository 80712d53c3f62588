//! The schema of `agent.toml` as written: plain values, checked and turned into [`super::AgentConfig`] by
//! [`ConfigFile::into_config`].

use std::path::PathBuf;
use std::time::Duration;

use protocol::control::AppId;
use serde::Deserialize;

use super::Backend;

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
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
    /// The app's owner-signed policy (from `gateway app sign-policy`), carried to the gateway with every
    /// registration.
    #[serde(default)]
    pub app_policy: Option<PathBuf>,
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
    /// The longest lifetime of a gateway's RA-TLS certificate that is accepted, in seconds (at least 60; default
    /// 24 hours).
    #[serde(default = "default_max_cert_lifetime")]
    pub max_certificate_lifetime_secs: u64,
    /// The lowest `tcbEvaluationDataNumber` of TDX collateral that is accepted (none by default).
    #[serde(default)]
    pub tdx_min_tcb_evaluation_data_number: Option<u32>,
}

fn default_max_cert_lifetime() -> u64 {
    24 * 3600
}

fn default_cert_validity() -> u64 {
    3600
}

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

impl ConfigFile {
    /// Parses TOML text without semantic checks.
    pub fn parse(text: &str) -> Result<Self, Box<toml::de::Error>> {
        toml::from_str(text).map_err(Box::new)
    }

    /// Every semantic problem, as messages a person can act on (empty: [`ConfigFile::into_config`] succeeds).
    pub fn problems(&self) -> Vec<String> {
        self.clone().into_config().err().unwrap_or_default()
    }
}
