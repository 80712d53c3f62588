//! `gateway run`: the control plane, the tunnel and the proxy, wired together.
//!
//! Start-up, each step logged: app policy; trust anchors and verifier; the gateway's attester and RA-TLS
//! identity; the registry (SQLite) and the gateway's WireGuard key kept in it; the WireGuard endpoint, into which
//! every registered instance is restored as a peer; the control listener (mutual RA-TLS); the proxy when
//! configured. Background tasks renew the RA-TLS certificate, reload the app policy when its file changes and
//! expire instances not seen for the configured time. All of them stop when the shutdown future completes; the
//! tunnel is then shut down (its TUN device removed).

mod attest;
mod tunnel;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attestation::policy::PolicyFn;
use attestation::ratls::{self, CertOptions, RaTlsIdentity, RaTlsVerifier};
use protocol::tunnel::{Endpoint, EndpointConfig, PrivateKey};
use tokio::sync::watch;

pub use attest::{summary, AgentClaims};
pub use tunnel::TunnelPeers;

use crate::config::GatewayConfig;
use crate::control::http::{router, ControlState};
use crate::control::listener::TlsListener;
use crate::control::rate::RateLimiter;
use crate::control::{ControlPeer, ControlService, PeerAttestation, ResponseSettings};
use crate::registry::{Registry, RegistryDirectory, RegistryDrains, RegistryStore, SqliteStore};

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A start-up step failed.
    #[error("{step}: {reason}")]
    Setup {
        /// The step.
        step: &'static str,
        /// What went wrong.
        reason: String,
    },
}

fn setup(step: &'static str) -> impl Fn(String) -> RunError {
    move |reason| RunError::Setup { step, reason }
}

/// Name of the gateway's WireGuard private key in the registry's secret table.
const WIREGUARD_SECRET: &str = "wireguard-private-key";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Loads the gateway's WireGuard key from the store, creating it on first start.
fn wireguard_key(store: &mut SqliteStore) -> Result<PrivateKey, RunError> {
    let err = setup("wireguard key");
    match store
        .secret(WIREGUARD_SECRET)
        .map_err(|e| err(e.to_string()))?
    {
        Some(bytes) => {
            let bytes: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| err("stored key is not 32 bytes".to_string()))?;
            Ok(PrivateKey::from_bytes(bytes))
        }
        None => {
            let bytes: [u8; 32] = rand::random();
            store
                .put_secret(WIREGUARD_SECRET, &bytes)
                .map_err(|e| err(e.to_string()))?;
            tracing::info!("generated the gateway's WireGuard key");
            Ok(PrivateKey::from_bytes(bytes))
        }
    }
}

/// How often the TDX collateral source fetches what verification missed and refreshes what nears expiry.
const COLLATERAL_REFRESH: Duration = Duration::from_secs(60);

/// Runs the gateway until `shutdown` completes.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let a = &config.attestation;
    tracing::info!(path = %a.app_policy.display(), "step 1/7: loading the app policy");
    let policy = attest::load_policy(&a.app_policy)?;

    tracing::info!(
        simulated_roots = a.trusted_sim_roots.len(),
        "step 2/7: trust anchors"
    );
    let (verifier, collateral) = attest::verifier(
        attest::trust_anchors(&a.trusted_sim_roots)?,
        a.tdx_collateral_dir.as_deref(),
        a.tdx_pccs_url.as_deref(),
    )?;
    let verifier = Arc::new(verifier);
    // The handshake checks evidence, binding and validity; the app policy applies per request, once the app id
    // is known, so a refusal can say which app and which check.
    let agents = Arc::new(RaTlsVerifier::new(
        verifier,
        Arc::new(PolicyFn(|_: &attestation::Claims| Ok(()))),
    ));

    tracing::info!(backend = ?a.backend, "step 3/7: attesting the gateway (RA-TLS certificate)");
    let attester = attest::attester(a)?;
    let options = CertOptions {
        validity: Duration::from_secs(a.certificate_validity_secs),
        ..Default::default()
    };
    let identity_attester = attester.clone();
    let identity =
        tokio::task::spawn_blocking(move || RaTlsIdentity::new(identity_attester, options))
            .await
            .map_err(|e| setup("ra-tls identity")(e.to_string()))?
            .map_err(|e| setup("ra-tls identity")(e.to_string()))?;
    let identity = Arc::new(identity);

    tracing::info!(path = %config.registry.path.display(), "step 4/7: opening the registry");
    let mut store =
        SqliteStore::open(&config.registry.path).map_err(|e| setup("registry")(e.to_string()))?;
    let wg_key = wireguard_key(&mut store)?;
    let t = &config.tunnel;
    let registry = Registry::open(
        Box::new(store),
        t.network,
        t.gateway_address,
        config.registry.expire_after(),
    )
    .map_err(|e| setup("registry")(e.to_string()))?;
    let snapshots = registry.snapshots();
    tracing::info!(instances = registry.len(), "registry loaded");

    tracing::info!(interface = %t.interface, port = t.listen_port, address = %t.gateway_address,
        "step 5/7: starting the WireGuard endpoint");
    let gateway_public = wg_key.public_key();
    let mut endpoint_config = EndpointConfig::new(
        wg_key,
        t.listen_port,
        t.gateway_address,
        t.network.prefix_len(),
    );
    endpoint_config.tun_name = t.interface.clone();
    endpoint_config.mtu = t.mtu;
    endpoint_config.health_window = t.health_window();
    let endpoint = Arc::new(
        Endpoint::start(endpoint_config)
            .await
            .map_err(|e| setup("tunnel")(e.to_string()))?,
    );
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
            gateway_endpoint: t.public_endpoint.clone(),
            gateway_address: t.gateway_address,
            prefix_len: t.network.prefix_len(),
            keepalive_secs: t.keepalive_secs,
            reregister_secs: t.reregister_secs,
            base_domains: config.base_domains.clone(),
        },
    );
    let restored = service.restore_peers();
    tracing::info!(
        restored,
        "every registered instance restored into the tunnel"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    tracing::info!(listen = %config.control.listen, "step 6/7: starting the control listener (mutual RA-TLS)");
    let tls = ratls::server_config(identity.clone(), agents.clone())
        .map_err(|e| setup("control tls")(e.to_string()))?;
    let tcp = tokio::net::TcpListener::bind(config.control.listen)
        .await
        .map_err(|e| {
            setup("control listener")(format!("binding {}: {e}", config.control.listen))
        })?;
    let identify_policy = policy.clone();
    let identify_agents = agents.clone();
    let listener = TlsListener::new(
        tcp,
        tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        Arc::new(move |conn: &rustls::ServerConnection| {
            let claims = identify_agents.peer_claims(conn)?;
            Some(Arc::new(AgentClaims {
                claims,
                policy: identify_policy.clone(),
            }) as Arc<dyn PeerAttestation>)
        }),
        Duration::from_secs(config.control.handshake_timeout_secs),
        config.control.max_connections,
    )
    .map_err(|e| setup("control listener")(e.to_string()))?;
    let doc_identity = identity.clone();
    let state = ControlState {
        service: service.clone(),
        limiter: Arc::new(RateLimiter::new(
            config.control.rate_limit_per_sec,
            config.control.rate_limit_burst,
        )),
        max_body_bytes: config.control.max_body_bytes,
        request_timeout: Duration::from_secs(config.control.request_timeout_secs),
        attestation: Arc::new(move || attestation_document(&doc_identity)),
    };
    let app = router(state).into_make_service_with_connect_info::<ControlPeer>();
    let mut control_stop = stop_rx.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = control_stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "control listener failed");
        }
    });

    let proxy_config = &config.proxy;
    tracing::info!(listen = ?proxy_config.listen, "step 7/7: starting the client proxy");
    let directory = Arc::new(RegistryDirectory::new(snapshots, Arc::new(peers.clone())));
    // `gateway.<base-domain>` serves the gateway's own attestation, bound to its public TLS key.
    let proxy = crate::proxy::server::Proxy::with_attester(
        proxy_config.clone(),
        &config.base_domains,
        t.health_window(),
        directory,
        attester,
    )
    .map_err(|e| setup("proxy")(e.to_string()))?;
    let drained = proxy
        .drains()
        .attach_store(Box::new(RegistryDrains::new(registry)))
        .map_err(|e| setup("proxy drains")(e.to_string()))?;
    tracing::info!(drained, "drained instances restored");
    let listeners = proxy
        .bind()
        .await
        .map_err(|e| setup("proxy")(e.to_string()))?;
    if let Some(admin_addr) = proxy_config.admin.listen {
        let token = proxy_config
            .admin_token()
            .map_err(|e| setup("proxy admin")(e.to_string()))?;
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|e| setup("proxy admin")(format!("binding {admin_addr}: {e}")))?;
        let (p, rx) = (proxy.clone(), stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::proxy::admin::serve(p, admin, token, rx).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }
    tasks.spawn(proxy.run(listeners, stop_rx.clone()));

    let sweep = expiry_sweep_interval(config.registry.expire_after());
    tasks.spawn(maintenance(
        service,
        identity,
        policy,
        sweep,
        stop_rx.clone(),
    ));
    if let Some(source) = collateral {
        tasks.spawn(attest::refresh_collateral(
            source,
            COLLATERAL_REFRESH,
            stop_rx.clone(),
        ));
    }
    tracing::info!("gateway running");
    shutdown.await;
    tracing::info!("shutting down");
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    match Arc::try_unwrap(endpoint) {
        Ok(endpoint) => endpoint.shutdown().await,
        Err(endpoint) => endpoint.shutdown_handle().shutdown(),
    }
    Ok(())
}

/// The gateway's attestation for `GET /v1/attestation`: its current RA-TLS certificate (which carries the
/// evidence) and the evidence's platform.
fn attestation_document(identity: &RaTlsIdentity) -> serde_json::Value {
    let cert = identity.certificate();
    serde_json::json!({
        "platform": cert.evidence().family(),
        "media_type": cert.evidence().media_type(),
        "certificate_pem": cert.cert_pem(),
        "not_after": cert.not_after().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    })
}

/// How often expired instances are looked for: every 30 s, or a quarter of the expiry time when that is shorter
/// (so an instance is removed within 1.25 times the expiry time), but not more often than every 2 s.
fn expiry_sweep_interval(expire_after: Duration) -> Duration {
    (expire_after / 4).clamp(MAINTENANCE_TICK, Duration::from_secs(30))
}

/// How often the maintenance task wakes.
const MAINTENANCE_TICK: Duration = Duration::from_secs(2);

/// Certificate renewal, policy reload on change (checked every 2 s) and instance expiry (every `sweep`), until
/// stopped.
async fn maintenance(
    service: ControlService,
    identity: Arc<RaTlsIdentity>,
    policy: Arc<attestation::policy::PolicyFile<attestation::policy::AppPolicy>>,
    sweep: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut policy_mtime = modified(policy.path());
    let mut tick = tokio::time::interval(MAINTENANCE_TICK);
    let mut last_expiry = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = modified(policy.path());
        if now != policy_mtime {
            policy_mtime = now;
            match policy.reload() {
                Ok(()) => tracing::info!(path = %policy.path().display(), "app policy reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "app policy reload failed; keeping the previous policy")
                }
            }
        }
        let id = identity.clone();
        match tokio::task::spawn_blocking(move || id.renew_if_due(SystemTime::now())).await {
            Ok(Ok(true)) => {
                let not_after = identity.certificate().not_after();
                tracing::info!(
                    not_after = not_after
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    "RA-TLS certificate renewed"
                )
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "RA-TLS certificate renewal failed; will retry")
            }
            Err(e) => tracing::error!(error = %e, "renewal task failed"),
        }
        if last_expiry.elapsed() >= sweep {
            last_expiry = std::time::Instant::now();
            let svc = service.clone();
            let _ = tokio::task::spawn_blocking(move || svc.expire(unix_now())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_sweeps_scale_with_short_expiry_times() {
        let secs = |s| expiry_sweep_interval(Duration::from_secs(s)).as_secs();
        assert_eq!(secs(86_400), 30);
        assert_eq!(secs(120), 30);
        assert_eq!(secs(20), 5);
        assert_eq!(secs(4), 2);
    }
}
