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
//! [tunnel]
//! interface = "tga0"                            # 1-15 characters
//! mtu = 1420                                    # 1280..=2000
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
//! Parse, don't validate: the file is read as a [`ConfigFile`] (its schema; unknown keys are errors) and turned
//! into an [`AgentConfig`] of domain types ([`GatewayUrl`], [`InterfaceName`], [`Mtu`], [`PortRule`] with its
//! [`crate::target::Target`]) in one step that lists every problem at once. `cvm-agent check-config` and
//! `cvm-agent run` both go through [`AgentConfig::load`], so a file one accepts the other can use.

mod file;

use std::path::{Path, PathBuf};
use std::time::Duration;

use attestation::settings::{
    CertificateValidity, MaxCertificateLifetime, Measurement, SettingsProblem,
};
use attestation::AttestationSettings;
use protocol::control::AppId;

pub use attestation::attester::Backend;
pub use file::{
    AgentAttestation, AgentDocker, AgentForwarding, AgentTunnel, ConfigFile, PortConfig,
    RegistrationTiming,
};
pub use protocol::tunnel::{InterfaceName, InterfaceNameError, Mtu, MtuError};

use crate::client::GatewayUrl;
use crate::forward::PortRule;

/// Shortest accepted `tunnel.handshake_timeout_secs`.
pub const MIN_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Shortest accepted `forwarding.probe_interval_ms`.
pub const MIN_PROBE_INTERVAL_MS: u64 = 100;

pub use edge::ConfigError;

/// The whole agent configuration, checked: every value is one the agent can run with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The app this instance belongs to.
    pub app_id: AppId,
    /// Gateway control URLs, tried in order (at least one).
    pub gateways: Vec<GatewayUrl>,
    /// Where the agent keeps its instance id across restarts (not empty).
    pub state_dir: PathBuf,
    /// The agent's own attestation and its policy for gateways.
    pub attestation: AttestationConfig,
    /// The agent's tunnel endpoint.
    pub tunnel: TunnelSettings,
    /// Registration timing.
    pub registration: RegistrationTiming,
    /// The Docker engine that Docker targets are discovered through.
    pub docker: AgentDocker,
    /// The port forwarder.
    pub forwarding: AgentForwarding,
    /// The ports the instance exposes through the gateway (distinct, none is 0).
    pub ports: Vec<PortRule>,
    /// The app's owner-signed policy file, carried with every registration (the gateway admits the instance only
    /// under the highest version of its owner's policy it has seen, brought by an agent or by the owner).
    pub app_policy: Option<PathBuf>,
}

/// The agent's attestation, checked: the settings shared with the gateway and the policy gateways must satisfy.
#[derive(Debug, Clone)]
pub struct AttestationConfig {
    /// The policy acceptable gateways must satisfy (a readable file).
    pub gateway_policy: PathBuf,
    /// The backend, simulated PKI and roots, certificate lifetime and TDX collateral directory.
    pub settings: AttestationSettings,
}

/// The agent's WireGuard endpoint, checked.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    /// Name of the TUN device.
    pub interface: InterfaceName,
    /// UDP port (0: any free port).
    pub listen_port: u16,
    /// MTU of the TUN device.
    pub mtu: Mtu,
    /// Register again when the tunnel showed no life for this long (at least 10 s).
    pub handshake_timeout: Duration,
}

impl AgentConfig {
    /// Reads, parses and checks a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        edge::load_toml(path, ConfigFile::into_config)
    }
}

/// Collects the problems of a conversion, so all are reported at once.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// The value, or `None` after recording the problem `describe` makes of the error.
    fn ok<T, E>(&mut self, r: Result<T, E>, describe: impl FnOnce(E) -> String) -> Option<T> {
        r.map_err(|e| self.push(describe(e))).ok()
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.push(problem());
        }
    }
}

impl ConfigFile {
    /// Turns the file into the configuration the agent runs with, or lists every problem (as messages a person
    /// can act on).
    pub fn into_config(self) -> Result<AgentConfig, Vec<String>> {
        let mut p = Problems::default();
        p.check(!self.gateways.is_empty(), || {
            "gateways: at least one gateway control URL is required".to_string()
        });
        let gateways: Vec<GatewayUrl> = self
            .gateways
            .iter()
            .filter_map(|g| {
                p.ok(GatewayUrl::parse(g), |why| {
                    format!("gateways: {g:?}: {why}")
                })
            })
            .collect();
        p.check(!self.state_dir.as_os_str().is_empty(), || {
            "state_dir is empty".into()
        });
        let attestation = attestation_config(&self.attestation, &mut p);
        let t = &self.tunnel;
        let interface = p.ok(InterfaceName::new(&t.interface), |e| {
            format!("tunnel.interface {:?} {e}", t.interface)
        });
        let mtu = p.ok(Mtu::new(t.mtu), |e| format!("tunnel.mtu = {} {e}", t.mtu));
        p.check(
            t.handshake_timeout_secs >= MIN_HANDSHAKE_TIMEOUT_SECS,
            || {
                format!(
                    "tunnel.handshake_timeout_secs = {} is below {MIN_HANDSHAKE_TIMEOUT_SECS}",
                    t.handshake_timeout_secs
                )
            },
        );
        let r = &self.registration;
        p.check(
            r.retry_initial_ms != 0 && r.retry_max_ms >= r.retry_initial_ms,
            || "registration: retry_initial_ms must be positive and at most retry_max_ms".into(),
        );
        p.check(r.attempt_timeout_secs != 0, || {
            "registration.attempt_timeout_secs must be at least 1".into()
        });
        let ports = port_rules(&self.ports, &mut p);
        p.check(
            self.forwarding.probe_interval_ms >= MIN_PROBE_INTERVAL_MS,
            || {
                format!(
                    "forwarding.probe_interval_ms = {} is below {MIN_PROBE_INTERVAL_MS}",
                    self.forwarding.probe_interval_ms
                )
            },
        );
        p.check(!self.docker.socket.as_os_str().is_empty(), || {
            "docker.socket is empty".into()
        });
        p.check(self.ports.len() <= protocol::control::MAX_PORTS, || {
            format!(
                "ports: at most {} ports may be declared",
                protocol::control::MAX_PORTS
            )
        });
        match (interface, mtu, attestation) {
            (Some(interface), Some(mtu), Some(attestation)) if p.0.is_empty() => Ok(AgentConfig {
                app_id: self.app_id,
                gateways,
                state_dir: self.state_dir,
                attestation,
                tunnel: TunnelSettings {
                    interface,
                    listen_port: t.listen_port,
                    mtu,
                    handshake_timeout: Duration::from_secs(t.handshake_timeout_secs),
                },
                registration: self.registration,
                docker: self.docker,
                forwarding: self.forwarding,
                ports,
                app_policy: self.app_policy,
            }),
            _ => Err(p.0),
        }
    }
}

/// The attestation section as the agent runs with it, or `None` after recording its problems: the value checks
/// (measurement, certificate lifetime) and then the settings' own [`AttestationSettings::problems`].
fn attestation_config(a: &AgentAttestation, p: &mut Problems) -> Option<AttestationConfig> {
    p.check(a.gateway_policy.is_file(), || {
        format!(
            "attestation.gateway_policy: {} is not a readable file",
            a.gateway_policy.display()
        )
    });
    let sim_measurement = match a.sim_measurement.as_deref().map(str::parse::<Measurement>) {
        None => Some(None),
        Some(parsed) => p.ok(parsed, |e| format!("attestation.{e}")).map(Some),
    };
    if a.gateway_policy.is_file() {
        if let Err(e) = attestation::policy::read_policy::<attestation::policy::GatewayPolicy>(
            &a.gateway_policy,
        ) {
            p.push(format!("attestation.gateway_policy: {e}"));
        }
    }
    let certificate_validity = p.ok(
        CertificateValidity::from_secs(a.certificate_validity_secs),
        |e| format!("attestation.{e}"),
    );
    let max_certificate_lifetime = p.ok(
        MaxCertificateLifetime::from_secs(a.max_certificate_lifetime_secs),
        |e| format!("attestation.{e}"),
    );
    let settings = AttestationSettings {
        backend: a.backend,
        trusted_sim_roots: a.trusted_sim_roots.clone(),
        sim_pki: a.sim_pki.clone(),
        certificate_validity: certificate_validity.unwrap_or_default(),
        sim_measurement: sim_measurement.flatten(),
        tdx_collateral_dir: a.tdx_collateral_dir.clone(),
        max_certificate_lifetime: max_certificate_lifetime.unwrap_or_default(),
        tdx_min_tcb_evaluation_data_number: a.tdx_min_tcb_evaluation_data_number,
    };
    // The simulated PKI directories are not required to exist when the file is checked (they may be provisioned
    // later); `run` reports them when it builds the attester and the verifier.
    for problem in settings.problems() {
        if !matches!(
            problem,
            SettingsProblem::SimPkiAbsent(_)
                | SettingsProblem::SimRootAbsent(_)
                | SettingsProblem::SimRootEmpty { .. }
        ) {
            p.push(problem.to_string());
        }
    }
    let (Some(_), Some(_), Some(_)) = (
        sim_measurement,
        certificate_validity,
        max_certificate_lifetime,
    ) else {
        return None;
    };
    Some(AttestationConfig {
        gateway_policy: a.gateway_policy.clone(),
        settings,
    })
}

/// The declared ports as forwarding rules: distinct, none is 0, each target in the grammar.
fn port_rules(ports: &[PortConfig], p: &mut Problems) -> Vec<PortRule> {
    let mut seen = std::collections::BTreeSet::new();
    let mut rules = Vec::new();
    for port in ports {
        p.check(port.port != 0, || {
            "ports: port 0 is not a valid port".into()
        });
        p.check(seen.insert(port.port), || {
            format!("ports: port {} is declared more than once", port.port)
        });
        if port.target.trim().is_empty() {
            p.push(format!("ports: port {} has an empty target", port.port));
            continue;
        }
        let target = p.ok(port.target.parse::<crate::target::Target>(), |e| {
            format!("ports: port {} target {:?}: {e}", port.port, port.target)
        });
        if let Some(target) = target {
            rules.push(PortRule {
                port: port.port,
                target,
                proxy_protocol: port.proxy_protocol,
            });
        }
    }
    rules
}

#[cfg(test)]
mod tests;
