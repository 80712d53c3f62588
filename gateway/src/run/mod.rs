//! `gateway run`: the control plane, the tunnel and the proxy, wired together.
//!
//! [`Gateway::build`] does the start-up, each step logged: app policy; trust anchors and verifier; the gateway's
//! attester and RA-TLS identity; the registry (SQLite) and the gateway's WireGuard key kept in it; the WireGuard
//! endpoint, into which every registered instance is restored as a peer; the control listener (mutual RA-TLS);
//! the proxy. It returns the running gateway, which owns every part.
//!
//! [`Gateway::serve`] then waits on the shutdown signal and on every critical part: the control listener, the
//! tunnel's threads, the proxy's listeners, the maintenance task (certificate renewal, policy reload, instance
//! expiry) and the TDX collateral refresh. When the signal comes, every part stops (open client connections get
//! their grace period) and the tunnel is shut down (its TUN device removed). When a part ends first (it failed
//! or panicked), the gateway logs which and why, stops the rest the same way and returns the error, so that the
//! process exits non-zero and its supervisor restarts it: a gateway never runs on with a dead part.

mod attest;
mod control;
mod error;
mod maintenance;
mod tunnel;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attestation::policy::PolicyFn;
use attestation::ratls::{CertOptions, RaTlsIdentity};
use protocol::tunnel::Endpoint;
use tokio_util::sync::CancellationToken;

pub use attest::AgentClaims;
pub use error::{PartError, RunError};
pub use tunnel::TunnelPeers;

use crate::config::{GatewayConfig, SecurityDocument};
use crate::control::{ControlService, ResponseSettings};
use crate::proxy::self_attestation::{Configuration, SelfAttestation};
use crate::proxy::server::Proxy;
use crate::registry::{Registry, RegistryDirectory, RegistryDrains, SqliteStore};
use crate::supervise::Critical;

/// How often the TDX collateral source fetches what verification missed and refreshes what nears expiry.
const COLLATERAL_REFRESH: Duration = Duration::from_secs(60);

/// The name of the control listener among the critical parts.
pub const CONTROL_LISTENER: &str = "control listener";
/// The name of the WireGuard endpoint among the critical parts.
pub const TUNNEL: &str = "tunnel";
/// The name of the client proxy (its listeners, certificate watcher and admin listener).
pub const PROXY: &str = "proxy";
/// The name of the maintenance task: certificate renewal, policy reload and instance expiry.
pub const MAINTENANCE: &str = "maintenance";
/// The name of the TDX collateral refresh.
pub const COLLATERAL: &str = "tdx collateral refresh";

/// A started gateway: every part running, owned here. Dropping it stops them all.
pub struct Gateway {
    parts: Critical<PartError>,
    endpoint: Arc<Endpoint>,
    control_addr: SocketAddr,
    proxy_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("control_addr", &self.control_addr)
            .field("proxy_addrs", &self.proxy_addrs)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Runs the gateway until `shutdown` completes or a critical part stops: [`Gateway::build`], then
/// [`Gateway::serve`].
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    Gateway::build(config).await?.serve(shutdown).await
}

impl Gateway {
    /// Does every start-up step and starts every part (see the module documentation).
    pub async fn build(config: GatewayConfig) -> Result<Gateway, RunError> {
        let a = &config.attestation;
        tracing::info!(path = %a.app_policy.display(), "step 1/7: loading the app policy");
        let policy = attest::load_policy(&a.app_policy)?;

        let settings = &a.settings;
        tracing::info!(
            simulated_roots = settings.trusted_sim_roots.len(),
            "step 2/7: trust anchors"
        );
        if a.insecure_trust_sim_roots_on_real_tee && !settings.trusted_sim_roots.is_empty() {
            tracing::warn!(backend = settings.backend.as_str(), "INSECURE: simulated vendor roots are trusted on a real TEE backend (attestation.insecure_trust_sim_roots_on_real_tee): anyone with a simulated PKI passes for an attested CVM");
        }
        let setup = settings
            .verifier_with_pccs(a.tdx_pccs_url.as_deref())
            .map_err(RunError::Verifier)?;
        let verifier = setup.verifier;
        // The roots the digest records are the ones the verifier was just built from: one reading of the files.
        let security = SecurityDocument::new(&config, setup.simulated_roots);
        let config_digest = security.digest().map_err(RunError::ConfigDigest)?;
        let canonical = security.canonical().map_err(RunError::ConfigDigest)?;
        tracing::info!(
            %config_digest,
            document = %canonical,
            "configuration digest, bound into the RA-TLS identity (agents may pin it: gateway policy config_digest)"
        );
        // Only a source that fetches needs refreshing; one reading a directory reads it on demand.
        let collateral = setup.collateral.filter(|source| source.fetches());
        // The handshake checks evidence, binding and validity; the app policy applies per request, once the app
        // id is known, so a refusal can say which app and which check.
        let agents = Arc::new(settings.ratls_verifier(
            Arc::new(verifier),
            Arc::new(PolicyFn(|_: &attestation::Claims| Ok(()))),
        ));

        tracing::info!(backend = ?settings.backend, "step 3/7: attesting the gateway (RA-TLS certificate)");
        let attester = settings.attester().map_err(RunError::Attester)?;
        let options = CertOptions {
            validity: settings.certificate_validity.duration(),
            config_digest: Some(config_digest),
            ..Default::default()
        };
        let identity_attester = attester.clone();
        let identity =
            tokio::task::spawn_blocking(move || RaTlsIdentity::new(identity_attester, options))
                .await
                .map_err(RunError::IdentityTask)?
                .map_err(RunError::Identity)?;
        let identity = Arc::new(identity);

        let path = &config.registry.path;
        tracing::info!(path = %path.display(), "step 4/7: opening the registry");
        let mut store = SqliteStore::open(path).map_err(|source| RunError::Store {
            path: path.clone(),
            source,
        })?;
        let sealer =
            attestation::sealing::Sealer::for_attester(&*attester).map_err(RunError::Seal)?;
        if sealer.is_durable() {
            tracing::info!(sealer = %sealer.describe(), "secrets are stored sealed");
        } else {
            tracing::warn!("this platform has no sealing key: secrets are sealed in memory only and regenerated at each start");
        }
        let wg_key = tunnel::wireguard_key(&mut store, &sealer)?;
        let t = &config.tunnel;
        let mut registry = Registry::open(
            Box::new(store),
            t.network,
            t.gateway_address,
            config.registry.expire_after(),
        )
        .map_err(RunError::Registry)?;
        registry.set_max_instances_per_app(config.registry.max_instances_per_app);
        let snapshots = registry.snapshots();
        tracing::info!(instances = registry.len(), "registry loaded");

        tracing::info!(interface = %t.interface, port = t.listen_port, address = %t.gateway_address,
            "step 5/7: starting the WireGuard endpoint");
        let (endpoint, gateway_public) = tunnel::start_endpoint(t, wg_key).await?;
        let endpoint = Arc::new(endpoint);
        let peers = TunnelPeers {
            endpoint: endpoint.clone(),
            keepalive: t.keepalive(),
        };
        let registry = Arc::new(Mutex::new(registry));
        let service = ControlService::new(
            registry.clone(),
            Arc::new(peers.clone()),
            ResponseSettings {
                gateway_key: gateway_public,
                gateway_endpoint: t.public_endpoint.to_string(),
                gateway_address: t.gateway_address,
                prefix_len: t.network.prefix_len(),
                keepalive_secs: t.keepalive_secs,
                reregister_secs: t.reregister_secs,
                base_domains: config.base_domain_names(),
            },
        );
        let restored = service.restore_peers();
        tracing::info!(
            restored,
            "every registered instance restored into the tunnel"
        );

        // From here on every part runs under `parts`: a failed step drops it, which stops what already runs.
        let mut parts = Critical::new(&CancellationToken::new());
        let stopped = endpoint.clone();
        let stop = parts.token();
        parts.spawn(TUNNEL, async move {
            tokio::select! {
                reason = stopped.stopped() => Err(PartError::Tunnel(reason)),
                () = stop.cancelled() => Ok(()),
            }
        });

        tracing::info!(listen = %config.control.listen, "step 6/7: starting the control listener (mutual RA-TLS)");
        let control_parts = control::ControlParts {
            identity: identity.clone(),
            agents,
            policy: policy.clone(),
            service: service.clone(),
        };
        let (control_addr, control) =
            control::start(&config.control, control_parts, parts.token()).await?;
        parts.spawn(CONTROL_LISTENER, control);

        let proxy_config = &config.proxy;
        tracing::info!(listen = ?proxy_config.listen, "step 7/7: starting the client proxy");
        let directory = Arc::new(
            RegistryDirectory::new(snapshots, Arc::new(peers))
                .with_revocations(service.revocations_handle()),
        );
        // `gateway.<base-domain>` serves the gateway's own attestation, bound to its public TLS key.
        // It also publishes the configuration digest, with the control certificate that binds it.
        let published = Configuration {
            digest: config_digest,
            document: canonical,
            identity: identity.clone(),
        };
        let proxy = Proxy::with_self_attestation(
            proxy_config.clone(),
            &config.base_domain_names(),
            t.health_window(),
            directory,
            SelfAttestation::new(attester).with_configuration(published),
        )
        .map_err(RunError::Proxy)?;
        let drained = proxy
            .drains()
            .attach_store(Box::new(RegistryDrains::new(registry)))
            .map_err(RunError::ProxyDrains)?;
        tracing::info!(drained, "drained instances restored");
        proxy
            .app_policies()
            .attach(Arc::new(service.clone()) as Arc<dyn crate::proxy::app_policy::AppPolicyIntake>);
        let running = crate::proxy::service::start(proxy, &parts.token())
            .await
            .map_err(RunError::ProxyStart)?;
        let (proxy_addrs, admin_addr) = (running.client_addrs.clone(), running.admin_addr);
        parts.spawn(PROXY, async move { Ok(running.wait().await?) });

        let maintenance = maintenance::Maintenance {
            service,
            identity,
            policy,
            sweep: maintenance::expiry_sweep_interval(config.registry.expire_after()),
        };
        let stop = parts.token();
        parts.spawn(MAINTENANCE, async move {
            maintenance.run(stop).await;
            Ok(())
        });
        if let Some(source) = collateral {
            let refresh = attest::refresh_collateral(source, COLLATERAL_REFRESH, parts.token());
            parts.spawn(COLLATERAL, async move {
                refresh.await;
                Ok(())
            });
        }
        tracing::info!("gateway running");
        Ok(Gateway {
            parts,
            endpoint,
            control_addr,
            proxy_addrs,
            admin_addr,
        })
    }

    /// The control listener's address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The client listeners' addresses.
    pub fn proxy_addrs(&self) -> &[SocketAddr] {
        &self.proxy_addrs
    }

    /// The admin listener's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Serves until `shutdown` completes or a critical part stops, then stops every part and the tunnel. Returns
    /// the part that stopped first, and why, if one did.
    pub async fn serve(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RunError> {
        let outcome = self.parts.run_until(shutdown).await;
        // Every part has ended, and with them the clones of the endpoint they held.
        let Gateway {
            parts, endpoint, ..
        } = self;
        drop(parts);
        match Arc::try_unwrap(endpoint) {
            Ok(endpoint) => endpoint.shutdown().await,
            Err(endpoint) => endpoint.shutdown_handle().shutdown(),
        }
        tracing::info!("gateway stopped");
        Ok(outcome?)
    }
}
