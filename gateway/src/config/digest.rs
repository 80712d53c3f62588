//! The gateway's security-relevant configuration, as the document whose digest its RA-TLS identity binds.
//!
//! Evidence covers the gateway's code, not the configuration file the host hands it. [`SecurityDocument`] lists
//! what in that file decides whom the gateway trusts and who can see traffic: the simulated roots it trusts (by
//! certificate fingerprint), whether it trusts them on a real TEE, where TDX collateral comes from and its floor,
//! the longest peer certificate lifetime, its base domains, listeners, tunnel network and where its TLS keys come
//! from. Its [`ConfigDigest`] is bound with the control listener's RA-TLS key
//! ([`attestation::Purpose::RaTlsKeyConfigured`]), logged at start, served in `gateway.<base>/v1/attestation`, and
//! printed by `gateway config-digest`; agents pin it in their gateway policy (`config_digest = ["…"]`), so a
//! gateway started with another configuration is refused. Timeouts, limits and paths of state are left out: they
//! change no trust decision.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use attestation::config_digest::DocumentError;
use attestation::{ConfigDigest, KeyOrigin};
use serde::Serialize;

use super::GatewayConfig;

/// The version of the document's layout; a change of layout gets a new one.
const VERSION: u32 = 1;

/// The security-relevant settings of a gateway; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityDocument {
    /// The layout version (1).
    pub version: u32,
    /// The base domains the gateway routes.
    pub base_domains: Vec<String>,
    /// The listeners.
    pub listeners: Listeners,
    /// The tunnel network and the gateway's address in it.
    pub tunnel: Tunnel,
    /// The certificates of terminated routes and where their keys come from.
    pub tls_keys: Vec<TlsKey>,
    /// Whom the gateway trusts, and how it attests itself.
    pub trust: Trust,
}

/// The attestation settings that decide whom the gateway trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trust {
    /// The backend that attests the gateway.
    pub backend: String,
    /// SHA-256 fingerprints of the simulated root certificates trusted for peers (empty: only vendor roots).
    pub simulated_roots: Vec<String>,
    /// Whether simulated roots are trusted although the gateway runs on a real TEE.
    pub insecure_trust_sim_roots_on_real_tee: bool,
    /// Where TDX collateral is fetched from, if anywhere.
    pub tdx_pccs_url: Option<String>,
    /// The lowest TDX `tcbEvaluationDataNumber` accepted, if set.
    pub tdx_min_tcb_evaluation_data_number: Option<u32>,
    /// The longest accepted lifetime of a peer's RA-TLS certificate, in seconds.
    pub max_certificate_lifetime_secs: u64,
}

/// Where the gateway listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listeners {
    /// The control listener (agents' registration).
    pub control: SocketAddr,
    /// The client listeners.
    pub client: Vec<SocketAddr>,
    /// The admin listener, if enabled.
    pub admin: Option<SocketAddr>,
}

/// The tunnel's addressing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    /// The network CVMs get addresses in.
    pub network: String,
    /// The gateway's address in it.
    pub gateway_address: Ipv4Addr,
}

/// One certificate of terminated routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsKey {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// Where the key comes from: whoever supplied it can decrypt the routes it serves.
    pub origin: KeyOrigin,
}

impl SecurityDocument {
    /// The document of `config`, whose trusted simulated roots have the fingerprints `simulated_roots` (read from
    /// the files it names: [`attestation::TrustAnchors::simulated_root_fingerprints`]).
    pub fn new(config: &GatewayConfig, simulated_roots: Vec<String>) -> Self {
        let a = &config.attestation;
        let proxy = &config.proxy;
        SecurityDocument {
            version: VERSION,
            base_domains: config
                .base_domains
                .iter()
                .map(|d| d.as_str().to_owned())
                .collect(),
            listeners: Listeners {
                control: config.control.listen,
                client: proxy.listen.clone(),
                admin: proxy.admin.listen,
            },
            tunnel: Tunnel {
                network: config.tunnel.network.to_string(),
                gateway_address: config.tunnel.gateway_address,
            },
            tls_keys: proxy
                .certificates
                .iter()
                .map(|c| TlsKey {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                    origin: KeyOrigin::OperatorSupplied,
                })
                .collect(),
            trust: Trust {
                backend: a.settings.backend.as_str().to_owned(),
                simulated_roots,
                insecure_trust_sim_roots_on_real_tee: a.insecure_trust_sim_roots_on_real_tee,
                tdx_pccs_url: a.tdx_pccs_url.clone(),
                tdx_min_tcb_evaluation_data_number: a.settings.tdx_min_tcb_evaluation_data_number,
                max_certificate_lifetime_secs: a
                    .settings
                    .max_certificate_lifetime
                    .duration()
                    .as_secs(),
            },
        }
    }

    /// The digest bound into the gateway's RA-TLS identity: SHA-256 of the [`Self::canonical`] JSON. It fails
    /// only for a path that is not UTF-8.
    pub fn digest(&self) -> Result<ConfigDigest, DocumentError> {
        ConfigDigest::of(self)
    }

    /// The document as it is logged, served and printed: JSON with every object's keys sorted.
    pub fn canonical(&self) -> Result<serde_json::Value, DocumentError> {
        attestation::config_digest::canonical(self)
    }
}

#[cfg(test)]
mod tests {
    use attestation::SimSnpPki;

    use super::*;

    const BASE: &str = r#"
base_domains = ["apps.example.com"]
[tunnel]
public_endpoint = "198.18.0.2:51820"
[attestation]
app_policy = "/etc/tee-gateway/apps.toml"
"#;

    /// The digest of `BASE` with `extra` appended (inside `[attestation]` unless it opens a table), trusting
    /// `anchors`.
    fn digest(extra: &str, anchors: &attestation::TrustAnchors) -> ConfigDigest {
        let config = GatewayConfig::parse(&format!("{BASE}{extra}")).expect("config");
        SecurityDocument::new(&config, anchors.simulated_root_fingerprints())
            .digest()
            .expect("digest")
    }

    fn trusting(seed: &str) -> attestation::TrustAnchors {
        let pki = SimSnpPki::generate_small(seed).expect("simulated PKI");
        attestation::TrustAnchors::production()
            .with_sim_snp_ark(pki.ark_der())
            .expect("simulated ARK")
    }

    #[test]
    fn trust_decisions_change_the_digest_and_nothing_else_does() {
        let vendor = attestation::TrustAnchors::production();
        let base = digest("", &vendor);
        assert_eq!(
            base,
            digest("", &vendor),
            "the same configuration, the same digest"
        );
        // Limits and timeouts change no trust decision.
        assert_eq!(
            base,
            digest("[control]\nrequest_timeout_secs = 99\n", &vendor)
        );
        for (what, extra) in [
            (
                "trusting simulated roots on a real TEE",
                "insecure_trust_sim_roots_on_real_tee = true\n",
            ),
            (
                "a collateral floor",
                "tdx_min_tcb_evaluation_data_number = 17\n",
            ),
            (
                "another control listener",
                "[control]\nlisten = \"0.0.0.0:9999\"\n",
            ),
            (
                "another client listener",
                "[proxy]\nlisten = [\"0.0.0.0:8443\"]\n",
            ),
        ] {
            assert_ne!(
                base,
                digest(extra, &vendor),
                "{what} must change the digest"
            );
        }
    }

    #[test]
    fn the_trusted_roots_count_by_content_not_by_path() {
        let ours = trusting("the owner's simulated PKI");
        let with_ours = digest("", &ours);
        assert_ne!(
            with_ours,
            digest("", &attestation::TrustAnchors::production())
        );
        // The same configuration text, another certificate behind the trusted path: another digest.
        assert_ne!(
            with_ours,
            digest("", &trusting("the operator's simulated PKI"))
        );
        assert_eq!(
            with_ours,
            digest("", &trusting("the owner's simulated PKI"))
        );
    }
}
