//! The gateway's configuration file, `gateway.toml`.
//!
//! One TOML file describes the control listener, base domains, the tunnel, the registry and attestation. Unknown
//! keys are errors, so a misspelt option never silently falls back to a default. Values with rules of their own
//! deserialize into checked types ([`DomainName`], [`PublicEndpoint`], [`TunnelNetwork`], [`InterfaceName`],
//! [`Mtu`], the attestation backend), so a bad one is a parse error naming its line and column, and a file that
//! parses holds only values the gateway can run with. [`GatewayConfig::problems`] lists, all at once, what depends
//! on several values or on other files. [`GatewayConfig::load`] does both, for `gateway run` and
//! `gateway check-config` alike.
//!
//! ```toml
//! base_domains = ["apps.example.com"]
//!
//! [control]
//! listen = "0.0.0.0:8443"
//!
//! [tunnel]
//! network = "10.0.0.0/8"
//! gateway_address = "10.0.0.1"
//! listen_port = 51820
//! public_endpoint = "gw.example.com:51820"
//!
//! [registry]
//! path = "/var/lib/tee-gateway/registry.sqlite"
//!
//! [attestation]
//! backend = "auto"
//! app_policy = "/etc/tee-gateway/apps.toml"
//! # tdx_collateral_dir = "/var/lib/tee-gateway/tdx-collateral"   # for agents' TDX quotes without collateral
//! # tdx_pccs_url = "https://pccs.example.com:8081"               # fetches what the directory lacks
//! ```

mod digest;
mod names;
mod network;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use attestation::AttestationSettings;
use serde::Deserialize;

pub use digest::SecurityDocument;
pub use names::{DomainName, PublicEndpoint};
pub use network::{NetworkError, TunnelNetwork};
pub use protocol::tunnel::{InterfaceName, Mtu};

pub use edge::ConfigError;

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Base domains under which apps are served (`<id>[-<port>][s|g].<base-domain>`).
    pub base_domains: Vec<DomainName>,
    /// The control listener agents register on.
    #[serde(default)]
    pub control: ControlConfig,
    /// The WireGuard tunnel towards the CVMs.
    pub tunnel: TunnelConfig,
    /// The instance registry.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The gateway's own attestation and the app policy.
    pub attestation: AttestationConfig,
    /// The client-facing proxy: listeners, certificates, timeouts, limits, admin listener.
    #[serde(default)]
    pub proxy: crate::proxy::config::ProxyConfig,
}

/// The control listener (`POST /v1/register`, `GET /v1/attestation`) over mutual RA-TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Sustained requests per second allowed from one source address.
    pub rate_limit_per_sec: u32,
    /// Requests one source address may send in a burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// Time allowed for the TLS handshake, in seconds.
    pub handshake_timeout_secs: u64,
    /// Time allowed for one request, in seconds.
    pub request_timeout_secs: u64,
    /// Most control connections served at once.
    pub max_connections: usize,
    /// Most control connections open at once from one source address (one IPv6 /64); more are closed at once.
    pub max_connections_per_source: usize,
    /// Time allowed to receive a request's head (request line and headers), and to wait for the next request
    /// on a kept-alive connection, in seconds.
    pub header_read_timeout_secs: u64,
    /// A connection on which no byte moved either way for this long is closed, in seconds.
    pub idle_timeout_secs: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            max_body_bytes: 16 * 1024,
            rate_limit_per_sec: 20,
            rate_limit_burst: 100,
            handshake_timeout_secs: 10,
            request_timeout_secs: 10,
            max_connections: 1024,
            max_connections_per_source: 64,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
        }
    }
}

/// The gateway's WireGuard endpoint and the tunnel address plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// The tunnel network, in CIDR notation; instance addresses are allocated from it.
    #[serde(default = "default_network")]
    pub network: TunnelNetwork,
    /// The gateway's own address inside the tunnel network.
    #[serde(default = "default_gateway_address")]
    pub gateway_address: Ipv4Addr,
    /// UDP port the gateway's WireGuard endpoint listens on.
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// `host:port` agents send WireGuard packets to (the gateway's public address).
    pub public_endpoint: PublicEndpoint,
    /// Name of the gateway's TUN device.
    #[serde(default = "default_interface")]
    pub interface: InterfaceName,
    /// MTU of the TUN device.
    #[serde(default)]
    pub mtu: Mtu,
    /// Persistent keep-alive agents are told to use, in seconds.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// How often agents are told to register again, in seconds.
    #[serde(default = "default_reregister")]
    pub reregister_secs: u64,
    /// An instance is healthy if it completed a handshake this recently, in seconds.
    #[serde(default = "default_health_window")]
    pub health_window_secs: u64,
}

fn default_network() -> TunnelNetwork {
    TunnelNetwork::new(Ipv4Addr::new(10, 0, 0, 0), 8)
        .unwrap_or_else(|_| unreachable!("10.0.0.0/8 is valid"))
}
fn default_gateway_address() -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1)
}
fn default_listen_port() -> u16 {
    51820
}
fn default_interface() -> InterfaceName {
    InterfaceName::new("tg0").unwrap_or_else(|_| unreachable!("tg0 is a valid interface name"))
}
fn default_keepalive() -> u64 {
    25
}
fn default_reregister() -> u64 {
    300
}
fn default_health_window() -> u64 {
    300
}

impl TunnelConfig {
    /// The keep-alive interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }
    /// The health window.
    pub fn health_window(&self) -> Duration {
        Duration::from_secs(self.health_window_secs)
    }
}

/// Where and how long instances are remembered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// The SQLite database file.
    pub path: PathBuf,
    /// An instance not seen for this long is expired and its address freed, in seconds.
    pub expire_after_secs: u64,
    /// The most instances one app may have registered at once; a registration of a new instance beyond it is
    /// refused (`instance_quota_exceeded`), a known instance's re-registration never is.
    pub max_instances_per_app: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/tee-gateway/registry.sqlite"),
            expire_after_secs: 24 * 3600,
            max_instances_per_app: crate::registry::DEFAULT_MAX_INSTANCES_PER_APP,
        }
    }
}

impl RegistryConfig {
    /// The expiry time.
    pub fn expire_after(&self) -> Duration {
        Duration::from_secs(self.expire_after_secs)
    }
}

/// Which attester produces the gateway's own evidence (`auto`, `tdx`, `sev-snp`, `sim-tdx`, `sim-snp`).
pub use attestation::attester::Backend as AttestationBackend;

/// The gateway's own attestation and the policy it applies to agents: the keys shared with the agent
/// ([`AttestationSettings`]) plus the gateway's app policy and PCCS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// The app policy file (per app id, the allowed profiles).
    pub app_policy: PathBuf,
    /// A PCCS or Intel PCS base URL (e.g. `https://api.trustedservices.intel.com`) from which TDX collateral that
    /// `tdx_collateral_dir` lacks is fetched, and refreshed before it expires. Fetching happens in the background,
    /// never during a handshake: the first agent of a new platform is refused until its collateral arrived.
    #[serde(default)]
    pub tdx_pccs_url: Option<String>,
    /// Trust simulated vendor roots although the gateway runs on a real TEE backend (`auto`, `tdx`, `sev-snp`):
    /// anyone holding a simulated PKI could then pass for an attested CVM. Only for hosts whose guests attest with
    /// simulated evidence through the production path (VM images under QEMU in CI); refused unless set.
    #[serde(default)]
    pub insecure_trust_sim_roots_on_real_tee: bool,
    /// The backend, simulated PKI and roots, certificate lifetime and TDX collateral directory.
    #[serde(flatten)]
    pub settings: AttestationSettings,
}

impl GatewayConfig {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        edge::load_toml(path, |config: Self| {
            let problems = config.problems();
            if problems.is_empty() {
                Ok(config)
            } else {
                Err(problems)
            }
        })
    }

    /// The base domains as plain names.
    pub fn base_domain_names(&self) -> Vec<String> {
        self.base_domains.iter().map(ToString::to_string).collect()
    }

    /// Parses TOML text into checked values; what depends on several values is left to [`Self::problems`].
    pub fn parse(text: &str) -> Result<Self, Box<toml::de::Error>> {
        toml::from_str(text).map_err(Box::new)
    }

    /// Every semantic problem of the configuration, as messages a person can act on. Empty if it is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.base_domains.is_empty() {
            problems.push("base_domains: at least one base domain is required".to_string());
        }
        let c = &self.control;
        if c.max_body_bytes < 256 {
            problems.push(format!(
                "control.max_body_bytes = {} is too small for a registration (>= 256)",
                c.max_body_bytes
            ));
        }
        if c.rate_limit_per_sec == 0 {
            problems.push("control.rate_limit_per_sec must be at least 1".to_string());
        }
        if c.handshake_timeout_secs == 0 || c.request_timeout_secs == 0 {
            problems.push("control.handshake_timeout_secs and control.request_timeout_secs must be at least 1".into());
        }
        if c.max_connections == 0 {
            problems.push("control.max_connections must be at least 1".to_string());
        }
        if c.max_connections_per_source == 0 {
            problems.push("control.max_connections_per_source must be at least 1".to_string());
        }
        if c.header_read_timeout_secs == 0 || c.idle_timeout_secs == 0 {
            problems.push(
                "control.header_read_timeout_secs and control.idle_timeout_secs must be at least 1"
                    .into(),
            );
        }
        let t = &self.tunnel;
        if let Err(e) = t.network.check_host(t.gateway_address) {
            problems.push(format!("tunnel.gateway_address: {e}"));
        }
        if t.network.prefix_len() > 30 {
            problems.push(format!(
                "tunnel.network {} leaves no room for instances (prefix must be /30 or shorter)",
                t.network
            ));
        }
        if t.keepalive_secs == 0 || t.keepalive_secs > 3600 {
            problems.push(format!(
                "tunnel.keepalive_secs = {} is outside 1..=3600",
                t.keepalive_secs
            ));
        }
        if t.reregister_secs < 10 {
            problems.push(format!(
                "tunnel.reregister_secs = {} is below 10",
                t.reregister_secs
            ));
        }
        if t.health_window_secs <= t.keepalive_secs {
            problems.push(format!(
                "tunnel.health_window_secs = {} must exceed keepalive_secs = {}",
                t.health_window_secs, t.keepalive_secs
            ));
        }
        if self.registry.expire_after_secs <= t.reregister_secs {
            problems.push(format!(
                "registry.expire_after_secs = {} must exceed tunnel.reregister_secs = {}, or live instances expire",
                self.registry.expire_after_secs, t.reregister_secs
            ));
        }
        if self.registry.max_instances_per_app == 0 {
            problems.push("registry.max_instances_per_app must be at least 1".to_string());
        }
        if self.registry.path.as_os_str().is_empty() {
            problems.push("registry.path is empty".to_string());
        }
        let a = &self.attestation;
        if !a.app_policy.is_file() {
            problems.push(format!(
                "attestation.app_policy: {} is not a readable file",
                a.app_policy.display()
            ));
        } else if let Err(e) = attestation::policy::read_policy::<
            crate::control::operator::OperatorApps,
        >(&a.app_policy)
        {
            problems.push(format!("attestation.app_policy: {e}"));
        }
        problems.extend(a.settings.problems().iter().map(ToString::to_string));
        if !a.settings.backend.is_simulated()
            && !a.settings.trusted_sim_roots.is_empty()
            && !a.insecure_trust_sim_roots_on_real_tee
        {
            problems.push(format!(
                concat!(
                    "attestation.trusted_sim_roots: the {} backend is a real TEE, and trusting simulated roots ",
                    "there lets anyone with a simulated PKI pass for an attested CVM; remove them, or set ",
                    "attestation.insecure_trust_sim_roots_on_real_tee = true where guests attest with simulated ",
                    "evidence"
                ),
                a.settings.backend.as_str()
            ));
        }
        if let Err(e) = self.proxy.validate() {
            problems.push(e.to_string());
        }
        for c in &self.proxy.certificates {
            for file in [&c.cert, &c.key] {
                if !file.is_file() {
                    problems.push(format!(
                        "proxy.certificates: {} is not a readable file",
                        file.display()
                    ));
                }
            }
        }
        if self.proxy.admin.listen.is_some() {
            match self.proxy.admin_token() {
                Ok(Some(t)) if t.len() >= 16 => {}
                Ok(Some(_)) => problems
                    .push("proxy.admin: the bearer token must be at least 16 characters".into()),
                Ok(None) => problems.push(
                    "proxy.admin.listen is set but no token (proxy.admin.token or token_file)"
                        .into(),
                ),
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests;

/// `gateway check-config`: loads a file, prints every problem (or a summary when it is fine) and returns the exit
/// status: success only for a usable file.
pub fn check_config(path: &Path) -> std::process::ExitCode {
    edge::config::check_report(path, GatewayConfig::load(path), |c| {
        format!(
            "control {}, tunnel {} gateway {} port {}, registry {}, backend {:?}",
            c.control.listen,
            c.tunnel.network,
            c.tunnel.gateway_address,
            c.tunnel.listen_port,
            c.registry.path.display(),
            c.attestation.settings.backend
        )
    })
}
