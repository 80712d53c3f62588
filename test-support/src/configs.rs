//! The configuration files of the programs under test, written the way an operator (or an app owner) would: the
//! gateway's `gateway.toml`, an agent's `agent-NAME.toml`, the operator's apps file, the app owner's signed app
//! policy and the agents' gateway policy.
//!
//! Every file of one test lives in one directory (a [`Scratch`](crate::Scratch)) with fixed names: the simulated
//! PKI in `pki/`, `apps.toml` (the operator's: it can only deny), `app-policy.json` (the owner's, signed with one
//! of the [`LAB_APPS`] keys), `gateway-policy.toml`, the gateway's `registry.sqlite` and each agent's
//! `state-NAME/`. The gateway listens on the lab's gateway host.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use attestation::owner::{OwnerKey, ProfilesFile, SignedPolicy};

use crate::lab::Host;
use crate::pki::CertFiles;

/// The gateway's control (registration) port.
pub const CONTROL_PORT: u16 = 8443;
/// The gateway's WireGuard port.
pub const WG_PORT: u16 = 51820;

/// A measurement (SNP `MEASUREMENT` or TDX `MRTD`) of 48 bytes, each `byte` (given as two hex digits).
pub fn measurement(byte: &str) -> String {
    byte.repeat(48)
}

/// The lines after `platform` of a simulated TDX profile allowing MRTD `mr_td` (96 hex digits) and the RTMR0-2
/// of a simulated TD (zeros): the whole boot chain pinned, as a real profile must.
fn sim_tdx_pins(mr_td: &str) -> String {
    let zero = measurement("00");
    format!(
        "mr_td = [\"{mr_td}\"]\nrtmr0 = [\"{zero}\"]\nrtmr1 = [\"{zero}\"]\nrtmr2 = [\"{zero}\"]\n"
    )
}

/// The apps of the lab tests and the seeds of their owners' keys: each app id is the one its owner's key derives
/// (`attestation::owner`), so only that key signs its policy.
pub const LAB_APPS: [(&str, u8); 2] = [
    ("9fc19746cf2f9a0064f3338ba6b3a9eb", 0x0a),
    ("cc51e4e08ea4888896234a7cf3f8779a", 0x0b),
];

/// The owner key of lab app `app` (one of [`LAB_APPS`]).
pub fn lab_owner(app: &str) -> OwnerKey {
    let (_, seed) = LAB_APPS
        .iter()
        .find(|(id, _)| *id == app)
        .unwrap_or_else(|| panic!("app {app} is not one of the lab's apps"));
    OwnerKey::from_seed([*seed; 32])
}

/// Profiles (`[[profile]]` tables, as `gateway app sign-policy` reads them) allowing any of the `allowed`
/// measurements, on simulated SNP or TDX.
pub fn app_profiles(allowed: &[&str]) -> String {
    let mut text = String::new();
    for m in allowed {
        let m = measurement(m);
        let _ = write!(
            text,
            "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{m}\"\n\n\
             [[profile]]\nplatform = \"sim-tdx\"\n{}\n",
            sim_tdx_pins(&m)
        );
    }
    text
}

/// Lab app `app`'s policy at `version` letting it run with any of the `allowed` measurements, signed by its
/// owner: the JSON document an agent's `app_policy` names and the admin API takes.
pub fn signed_app_policy(app: &str, version: u64, allowed: &[&str]) -> String {
    let profiles = ProfilesFile::from_toml(&app_profiles(allowed))
        .unwrap_or_else(|e| panic!("lab profiles: {e}"))
        .profile;
    SignedPolicy::sign(&lab_owner(app), version, profiles)
        .unwrap_or_else(|e| panic!("signing: {e}"))
        .to_json()
}

/// The operator's apps file of the lab: it lists nothing (an operator may deny an app there, never allow one).
pub fn operator_apps() -> String {
    "# The operator's apps file: `[apps.<id>] deny = true` blocks an app; admission is the owners' signed policies.\n"
        .into()
}

/// An agents' gateway policy accepting gateways with measurement `allowed` (simulated SNP or TDX).
pub fn gateway_policy(allowed: &str) -> String {
    let m = measurement(allowed);
    format!(
        "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{m}\"\n\n\
         [[profile]]\nplatform = \"sim-tdx\"\n{}",
        sim_tdx_pins(&m)
    )
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The settings of a lab gateway that tests change; [`Default`] is what the registration tests run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The one base domain.
    pub base_domain: String,
    /// The tunnel's TUN device.
    pub interface: String,
    /// The tunnel network (the gateway's default when `None`).
    pub network: Option<String>,
    /// How often agents are asked to register again.
    pub reregister_secs: u64,
    /// The health window (the gateway's default when `None`).
    pub health_window_secs: Option<u64>,
    /// When silent instances expire (the gateway's default when `None`).
    pub expire_after_secs: Option<u64>,
    /// At most this many instances per app (the gateway's default when `None`).
    pub max_instances_per_app: Option<u64>,
    /// The attestation backend (`sim-snp` or `sim-tdx`).
    pub backend: String,
    /// The gateway's own simulated measurement, as two hex digits repeated (see [`measurement`]).
    pub measurement: String,
    /// The validity of its RA-TLS certificates (the gateway's default when `None`).
    pub certificate_validity_secs: Option<u64>,
    /// The client listener's port.
    pub proxy_port: u16,
    /// The client listener's certificates.
    pub certificates: Vec<CertFiles>,
    /// More `[proxy]` lines, and tables after it (`[proxy.admin]`).
    pub proxy_extra: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            base_domain: "apps.lab.test".into(),
            interface: "tgreg0".into(),
            network: Some("10.0.0.0/8".into()),
            reregister_secs: 20,
            health_window_secs: Some(30),
            expire_after_secs: Some(3600),
            max_instances_per_app: None,
            backend: "sim-snp".into(),
            measurement: "aa".into(),
            certificate_validity_secs: Some(3600),
            proxy_port: 9443,
            certificates: Vec::new(),
            proxy_extra: String::new(),
        }
    }
}

impl GatewayConfig {
    /// The configuration text for the files in `dir`.
    pub fn render(&self, dir: &Path) -> String {
        let gw = Host::Gateway.addr();
        let mut text = format!(
            "base_domains = [\"{base}\"]\n[control]\nlisten = \"{gw}:{CONTROL_PORT}\"\nrate_limit_per_sec = 1000\n\
             rate_limit_burst = 1000\n[tunnel]\nlisten_port = {WG_PORT}\npublic_endpoint = \"{gw}:{WG_PORT}\"\n\
             interface = \"{interface}\"\nreregister_secs = {reregister}\nkeepalive_secs = 2\n",
            base = self.base_domain,
            interface = self.interface,
            reregister = self.reregister_secs,
        );
        optional(
            &mut text,
            "network",
            self.network.as_ref().map(|n| format!("\"{n}\"")),
        );
        optional(&mut text, "health_window_secs", self.health_window_secs);
        let _ = write!(
            text,
            "[registry]\npath = \"{}\"\n",
            dir.join("registry.sqlite").display()
        );
        optional(&mut text, "expire_after_secs", self.expire_after_secs);
        optional(
            &mut text,
            "max_instances_per_app",
            self.max_instances_per_app,
        );
        let pki = dir.join("pki");
        let _ = write!(
            text,
            "[attestation]\nbackend = \"{backend}\"\napp_policy = \"{policy}\"\ntrusted_sim_roots = [\"{pki}\"]\n\
             sim_pki = \"{pki}\"\nsim_measurement = \"{m}\"\n",
            backend = self.backend,
            policy = dir.join("apps.toml").display(),
            pki = pki.display(),
            m = measurement(&self.measurement),
        );
        optional(
            &mut text,
            "certificate_validity_secs",
            self.certificate_validity_secs,
        );
        let _ = writeln!(text, "[proxy]\nlisten = [\"{gw}:{}\"]", self.proxy_port);
        if !self.certificates.is_empty() {
            let list: Vec<String> = self
                .certificates
                .iter()
                .map(|c| {
                    format!(
                        "{{ cert = \"{}\", key = \"{}\" }}",
                        c.cert.display(),
                        c.key.display()
                    )
                })
                .collect();
            let _ = writeln!(text, "certificates = [{}]", list.join(", "));
        }
        text + &self.proxy_extra
    }

    /// Writes the configuration as `dir/gateway.toml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("gateway.toml");
        write_file(&path, &self.render(dir));
        path
    }
}

fn optional(text: &mut String, key: &str, value: Option<impl std::fmt::Display>) {
    if let Some(v) = value {
        let _ = writeln!(text, "{key} = {v}");
    }
}

/// One `[[ports]]` entry of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The port on the instance's tunnel address.
    pub port: u16,
    /// Where connections go (`HOST:PORT`, `docker:SERVICE:PORT`, `docker-label`).
    pub target: String,
    /// Whether connections start with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
}

impl Port {
    /// `port` forwarded to `target`, without a PROXY protocol header.
    pub fn to(port: u16, target: impl Into<String>) -> Port {
        Port {
            port,
            target: target.into(),
            proxy_protocol: false,
        }
    }

    /// The same with a PROXY protocol v2 header.
    pub fn with_proxy_protocol(self) -> Port {
        Port {
            proxy_protocol: true,
            ..self
        }
    }
}

/// The settings of a lab agent that tests change; [`Default`] is what the registration tests run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The app it runs.
    pub app_id: String,
    /// The attestation backend (`sim-snp` or `sim-tdx`).
    pub backend: String,
    /// Its simulated measurement, as two hex digits repeated (see [`measurement`]).
    pub measurement: String,
    /// The gateway policy's file name in the test's directory.
    pub gateway_policy: String,
    /// The file name, in the test's directory, of the owner-signed app policy it carries (none when `None`).
    pub app_policy: Option<String>,
    /// The validity of its RA-TLS certificates (the agent's default when `None`).
    pub certificate_validity_secs: Option<u64>,
    /// The tunnel's TUN device (`tga-NAME` when `None`).
    pub interface: Option<String>,
    /// How long the tunnel may go without a handshake (the agent's default when `None`).
    pub handshake_timeout_secs: Option<u64>,
    /// The first retry delay of a failed registration.
    pub retry_initial_ms: u64,
    /// The longest retry delay.
    pub retry_max_ms: u64,
    /// The forwarded ports.
    pub ports: Vec<Port>,
    /// More tables (`[docker]`).
    pub extra: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            app_id: LAB_APPS[0].0.into(),
            backend: "sim-snp".into(),
            measurement: "aa".into(),
            gateway_policy: "gateway-policy.toml".into(),
            app_policy: Some("app-policy.json".into()),
            certificate_validity_secs: Some(3600),
            interface: None,
            handshake_timeout_secs: Some(30),
            retry_initial_ms: 200,
            retry_max_ms: 2000,
            ports: vec![Port::to(7000, "127.0.0.1:7000")],
            extra: String::new(),
        }
    }
}

impl AgentConfig {
    /// The configuration text of agent `name` for the files in `dir`.
    pub fn render(&self, dir: &Path, name: &str) -> String {
        let pki = dir.join("pki");
        let mut text = format!(
            "app_id = \"{app}\"\ngateways = [\"https://{gw}:{CONTROL_PORT}\"]\nstate_dir = \"{state}\"\n{app_policy}\
             [attestation]\nbackend = \"{backend}\"\ngateway_policy = \"{gp}\"\ntrusted_sim_roots = [\"{pki}\"]\n\
             sim_pki = \"{pki}\"\nsim_measurement = \"{m}\"\n",
            app = self.app_id,
            gw = Host::Gateway.addr(),
            state = dir.join(format!("state-{name}")).display(),
            app_policy = self
                .app_policy
                .as_ref()
                .map(|f| format!("app_policy = \"{}\"\n", dir.join(f).display()))
                .unwrap_or_default(),
            backend = self.backend,
            gp = dir.join(&self.gateway_policy).display(),
            pki = pki.display(),
            m = measurement(&self.measurement),
        );
        optional(
            &mut text,
            "certificate_validity_secs",
            self.certificate_validity_secs,
        );
        let interface = self
            .interface
            .clone()
            .unwrap_or_else(|| format!("tga-{name}"));
        let _ = writeln!(text, "[tunnel]\ninterface = \"{interface}\"");
        optional(
            &mut text,
            "handshake_timeout_secs",
            self.handshake_timeout_secs,
        );
        let _ = write!(
            text,
            "[registration]\nretry_initial_ms = {}\nretry_max_ms = {}\nattempt_timeout_secs = 5\n",
            self.retry_initial_ms, self.retry_max_ms
        );
        for p in &self.ports {
            let _ = write!(
                text,
                "[[ports]]\nport = {}\ntarget = \"{}\"\n",
                p.port, p.target
            );
            if p.proxy_protocol {
                text += "proxy_protocol = true\n";
            }
        }
        text + &self.extra
    }

    /// Writes agent `name`'s configuration as `dir/agent-NAME.toml` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("agent-{name}.toml"));
        write_file(&path, &self.render(dir, name));
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_apps_are_the_ids_their_owners_keys_derive() {
        for (app, _) in LAB_APPS {
            assert_eq!(lab_owner(app).app_id(), app);
            let signed = SignedPolicy::from_json(&signed_app_policy(app, 3, &["aa"])).unwrap();
            assert_eq!(signed.verify_for(app).unwrap().version(), 3);
        }
    }
}
