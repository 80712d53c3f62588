//! `cvm-agent run`: the boot sequence and the registration loop.
//!
//! Boot, each step logged:
//! 1. the instance id from the state directory (created on first boot);
//! 2. the gateway policy and trust anchors;
//! 3. the agent's evidence in a fresh RA-TLS certificate, and a fresh WireGuard key pair (both in memory only);
//! 4. registration: for each gateway URL in order, a mutual RA-TLS handshake in which the gateway's evidence is
//!    verified against the gateway policy before anything else is sent; only then the request with the
//!    WireGuard key. A gateway refused at the handshake learns nothing; the failed check is logged;
//! 5. the tunnel: TUN device with the assigned address (its prefix route reaches the gateway), the gateway as the
//!    one peer, persistent keep-alive as the gateway says (25 s by default).
//!
//! Docker discovery (the Docker Engine API at `docker.socket`) starts at boot only when some port has a Docker
//! target, so an agent with only `HOST:PORT` targets needs no Docker engine. Once the tunnel is up, the port
//! forwarder listens on the tunnel address for every declared port (and is restarted on a new address when the
//! gateway assigns one); the tunnel endpoint's inbound filter lets in only the declared ports (and ICMP echo), so
//! other ports are refused even where a local service listens on a wildcard address.
//!
//! Then the agent registers again every re-registration interval, at once when a port's target state may have
//! changed (a container started or stopped, a fixed address stopped or started accepting a probe connection), and when the tunnel showed no life - no handshake completed and no
//! packet came from the gateway - for the handshake timeout (180 s by default; WireGuard sessions last at most
//! 180 s, so a working tunnel handshakes sooner, and the gateway's keep-alives arrive far more often). Session
//! restarts after a silence do not reset that clock. Each registration reports every port's target state (up or
//! down). Failures are retried with exponential backoff and jitter (the loop wakes for each retry on time); the
//! tunnel and everything behind it keep running meanwhile. The RA-TLS certificate is renewed when a quarter of
//! its validity remains, and the gateway policy is reloaded when its file changes. Everything stops when the
//! shutdown future completes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use attestation::policy::{GatewayPolicy, PolicyFile, PolicyFn};
use attestation::ratls::{self, CertOptions, RaTlsIdentity, RaTlsVerifier};
use attestation::tdx::{CollateralConfig, CollateralSource};
use attestation::{Attester, TrustAnchors, Verifier};
use protocol::control::{
    InstanceId, PortPolicy, RegisterRequest, RegisterResponse, WireGuardKey, PROTOCOL_VERSION,
};
use protocol::tunnel::PrivateKey;

use crate::backoff::Backoff;
use crate::client::{register_once, AttemptError, GatewayUrl};
use crate::config::AgentConfig;
use crate::docker::{Discovery, DiscoveryConfig, DiscoveryTask};
use crate::forward::{ForwardConfig, Forwarder, PortRule};
use crate::state::StateDir;
use crate::supervisor::{Action, Assignment, Event, Supervisor};
use crate::target::Target;
use crate::tunnel::GatewayTunnel;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A boot step failed.
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

fn attester(config: &AgentConfig) -> Result<Arc<dyn Attester>, RunError> {
    let a = &config.attestation;
    a.backend
        .attester(a.sim_pki.as_deref(), a.sim_measurement.as_deref())
        .map_err(|e| setup("attester")(e.to_string()))
}

fn anchors(config: &AgentConfig) -> Result<TrustAnchors, RunError> {
    attestation::attester::select::trust_anchors(&config.attestation.trusted_sim_roots)
        .map_err(|e| setup("trust anchors")(e.to_string()))
}

/// Everything a registration attempt needs.
struct Registrar {
    gateways: Vec<GatewayUrl>,
    tls: Arc<rustls::ClientConfig>,
    verifier: Arc<RaTlsVerifier>,
    request: RegisterRequest,
    timeout: Duration,
}

impl Registrar {
    /// One pass over the gateways in order; the first answer wins.
    async fn register(
        &self,
        ports: Vec<PortPolicy>,
    ) -> Result<(GatewayUrl, RegisterResponse), Vec<AttemptError>> {
        let request = RegisterRequest {
            ports,
            ..self.request.clone()
        };
        let mut errors = Vec::new();
        for gateway in &self.gateways {
            tracing::info!(%gateway, "registering: connecting and verifying the gateway's evidence");
            let verifier = self.verifier.clone();
            let result = register_once(gateway, self.tls.clone(), &request, self.timeout, |verified| {
                let claims = verifier.claims_for(&verified.certificate);
                tracing::info!(%gateway, claims = ?claims.as_deref().map(claims_summary),
                    "gateway evidence verified against the gateway policy; sending the registration");
            })
            .await;
            match result {
                Ok(answer) => return Ok((gateway.clone(), answer)),
                Err(e) => {
                    if e.is_permanent() {
                        tracing::error!(error = %e, "registration refused; the gateway's operator or this \
                            instance's configuration must change before it can succeed");
                    } else {
                        tracing::warn!(error = %e, "registration attempt failed");
                    }
                    errors.push(e);
                }
            }
        }
        Err(errors)
    }
}

fn claims_summary(claims: &attestation::Claims) -> String {
    let value = serde_json::to_value(claims).unwrap_or_default();
    let m = ["measurement", "mr_td"]
        .iter()
        .find_map(|k| {
            value
                .get(*k)
                .and_then(|v| v.as_str())
                .map(|m| format!(" {k}={m}"))
        })
        .unwrap_or_default();
    format!("{}{m}", claims.platform)
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    tracing::info!(dir = %config.state_dir.display(), "boot 1/5: state directory");
    let state =
        StateDir::open(&config.state_dir).map_err(|e| setup("state directory")(e.to_string()))?;
    let (instance_id, fresh) = state
        .instance_id()
        .map_err(|e| setup("state directory")(e.to_string()))?;
    tracing::info!(instance = %instance_id, app = %config.app_id, new = fresh, "instance id");

    tracing::info!(policy = %config.attestation.gateway_policy.display(), "boot 2/5: gateway policy and trust anchors");
    let policy: Arc<PolicyFile<GatewayPolicy>> = Arc::new(
        PolicyFile::load(&config.attestation.gateway_policy)
            .map_err(|e| setup("gateway policy")(e.to_string()))?,
    );
    let mut verifier = Verifier::new(anchors(&config)?);
    if let Some(dir) = &config.attestation.tdx_collateral_dir {
        let source = CollateralSource::new(CollateralConfig {
            cache_dir: Some(dir.clone()),
            ..Default::default()
        })
        .map_err(|e| setup("tdx collateral")(format!("{}: {e}", dir.display())))?;
        verifier = verifier.with_tdx_collateral(Arc::new(source));
    }
    let verifier = Arc::new(verifier);
    let check_policy = policy.clone();
    let gateways_verifier = Arc::new(RaTlsVerifier::new(
        verifier,
        Arc::new(PolicyFn(move |claims: &attestation::Claims| {
            check_policy.current().check(claims).map(|_| ())
        })),
    ));

    tracing::info!(backend = ?config.attestation.backend, "boot 3/5: attesting (RA-TLS certificate) and WireGuard key");
    let attester = attester(&config)?;
    let options = CertOptions {
        validity: Duration::from_secs(config.attestation.certificate_validity_secs),
        ..Default::default()
    };
    let identity = tokio::task::spawn_blocking(move || RaTlsIdentity::new(attester, options))
        .await
        .map_err(|e| setup("ra-tls identity")(e.to_string()))?
        .map_err(|e| setup("ra-tls identity")(e.to_string()))?;
    let identity = Arc::new(identity);
    let tls = Arc::new(
        ratls::client_config(identity.clone(), gateways_verifier.clone())
            .map_err(|e| setup("tls")(e.to_string()))?,
    );
    let wg_key = PrivateKey::generate();
    let wg_public = wg_key.public_key();

    let rules = config.ports.clone();
    let discovery = rules
        .iter()
        .any(|r| !matches!(r.target, Target::Address { .. }))
        .then(|| {
            tracing::info!(socket = %config.docker.socket.display(),
                "a port has a Docker target: following the Docker engine");
            DiscoveryTask::spawn(DiscoveryConfig {
                socket: config.docker.socket.clone(),
                ..DiscoveryConfig::default()
            })
        });

    let gateways = config.gateways.clone();
    let registrar = Registrar {
        gateways,
        tls,
        verifier: gateways_verifier,
        request: request(&config, &instance_id, wg_public),
        timeout: config.registration.attempt_timeout(),
    };
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
        _ = registration_loop(&config, &registrar, &wg_key, &identity, &policy,
            Forwarding {
                rules,
                discovery: discovery.as_ref().map(DiscoveryTask::discovery),
                probe_interval: config.forwarding.probe_interval(),
                running: None,
                changes: None,
            },
        ) => Ok(()),
    }
}

fn request(config: &AgentConfig, instance_id: &InstanceId, key: WireGuardKey) -> RegisterRequest {
    RegisterRequest {
        version: PROTOCOL_VERSION,
        app_id: config.app_id.clone(),
        instance_id: instance_id.clone(),
        wireguard_public_key: key,
        ports: config
            .ports
            .iter()
            .map(|p| PortPolicy {
                port: p.port,
                proxy_protocol: p.proxy_protocol,
                // Unknown until the forwarder runs (it needs the tunnel address from this registration).
                target_state: None,
            })
            .collect(),
    }
}

/// The port forwarder and what it is built from.
struct Forwarding {
    rules: Vec<PortRule>,
    discovery: Option<Discovery>,
    probe_interval: Duration,
    running: Option<(Forwarder, std::net::IpAddr)>,
    /// The running forwarder's port state changes.
    changes: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Forwarding {
    /// Makes the forwarder listen on `address`, (re)starting it when it does not already. Returns whether it
    /// was (re)started.
    async fn ensure(&mut self, address: std::net::IpAddr) -> bool {
        if matches!(&self.running, Some((_, at)) if *at == address) {
            return false;
        }
        if let Some((old, at)) = self.running.take() {
            tracing::info!(old = %at, new = %address, "tunnel address changed; restarting the port forwarder");
            old.shutdown().await;
        }
        let mut config = ForwardConfig::new(address, self.rules.clone());
        config.probe_interval = self.probe_interval;
        match Forwarder::start(config, self.discovery.clone()).await {
            Ok(f) => {
                tracing::info!(%address, ports = ?f.ports(), "port forwarder running");
                self.changes = Some(f.changes());
                self.running = Some((f, address));
                true
            }
            Err(e) => {
                tracing::error!(%address, error = %e, "starting the port forwarder failed; will retry");
                false
            }
        }
    }

    /// Whether a port's state may have changed since the last call (the container view changed, a fixed address
    /// stopped or started accepting).
    fn changed(&mut self) -> bool {
        match self.changes.as_mut() {
            Some(rx) => {
                let changed = rx.has_changed().unwrap_or(false);
                if changed {
                    rx.borrow_and_update();
                }
                changed
            }
            None => false,
        }
    }

    /// The port policies for the next registration: with target states once the forwarder runs.
    async fn policies(&self, fallback: &[PortPolicy]) -> Vec<PortPolicy> {
        match &self.running {
            Some((f, _)) => f.port_policies().await,
            None => fallback.to_vec(),
        }
    }
}

/// Drives the [`Supervisor`]: each tick renews the certificate when due, reloads a changed gateway policy, feeds
/// what the tunnel and the ports did, then carries out what the supervisor asks for until it says to sleep. Never
/// returns on its own.
async fn registration_loop(
    config: &AgentConfig,
    registrar: &Registrar,
    wg_key: &PrivateKey,
    identity: &Arc<RaTlsIdentity>,
    policy: &PolicyFile<GatewayPolicy>,
    mut forwarding: Forwarding,
) {
    let timing = &config.registration;
    let mut supervisor = Supervisor::new(
        config.tunnel.handshake_timeout,
        Backoff::new(timing.retry_initial(), timing.retry_max()),
        Instant::now(),
    );
    let mut tunnel: Option<GatewayTunnel> = None;
    // The answer of the latest registration, until the tunnel follows it.
    let mut answer: Option<RegisterResponse> = None;
    let mut policy_watch = PolicyWatch::new(policy);
    tracing::info!("boot 4/5: registering with the gateway");
    loop {
        renew_certificate(identity).await;
        policy_watch.reload_if_changed(policy);
        if let Some(t) = &tunnel {
            supervisor.handle(Instant::now(), Event::PeerSeen(t.activity()));
            if forwarding.ensure(t.answer().tunnel_address.into()).await {
                // Report the ports' target states, unknown at the registration that assigned the address.
                supervisor.handle(Instant::now(), Event::ForwarderStarted);
            }
        }
        if forwarding.changed() {
            let ports = forwarding.policies(&registrar.request.ports).await;
            supervisor.handle(Instant::now(), Event::PortStates(ports));
        }
        loop {
            let event = match supervisor.poll(Instant::now()) {
                Action::Sleep { until } => {
                    tokio::time::sleep_until(until.into()).await;
                    break;
                }
                Action::RestartSession { silent_for } => {
                    tracing::warn!(since = ?silent_for, "nothing heard from the gateway; restarting the WireGuard session");
                    if let Some(t) = tunnel.as_mut() {
                        if let Err(e) = t.restart_session().await {
                            tracing::error!(error = %e, "restarting the WireGuard session failed");
                        }
                    }
                    continue;
                }
                Action::Register(_) => {
                    let ports = forwarding.policies(&registrar.request.ports).await;
                    match registrar.register(ports.clone()).await {
                        Ok((gateway, a)) => {
                            tracing::info!(%gateway, address = %a.tunnel_address, reregister_secs = a.reregister_secs,
                                "registered");
                            let assignment = Assignment::of(&a);
                            answer = Some(a);
                            Event::Registered { ports, assignment }
                        }
                        Err(_) => Event::RegistrationFailed,
                    }
                }
                action @ (Action::StartTunnel(_) | Action::UpdateTunnel(_)) => {
                    let update = matches!(action, Action::UpdateTunnel(_));
                    tunnel = match (answer.take(), tunnel.take()) {
                        (Some(a), Some(t)) if update => t.update(a).await.map_err(|e| {
                            tracing::error!(error = %e, "updating the tunnel failed; will retry")
                        }),
                        (Some(a), old) => start_tunnel(config, wg_key, old, a).await,
                        // Cannot happen: a set-up is only asked for right after a registration.
                        (None, _) => Err(()),
                    }
                    .ok();
                    if tunnel.is_some() {
                        Event::TunnelReady
                    } else {
                        Event::TunnelFailed
                    }
                }
            };
            supervisor.handle(Instant::now(), event);
        }
    }
}

/// Builds the tunnel for `answer`, shutting down the `old` one first (the gateway assigned a new address).
/// Failures are logged.
async fn start_tunnel(
    config: &AgentConfig,
    wg_key: &PrivateKey,
    old: Option<GatewayTunnel>,
    answer: RegisterResponse,
) -> Result<GatewayTunnel, ()> {
    match old {
        Some(old) => {
            tracing::warn!(old = %old.answer().tunnel_address, new = %answer.tunnel_address,
                "the gateway assigned a new tunnel address; rebuilding the tunnel");
            old.shutdown().await;
        }
        None => tracing::info!("boot 5/5: bringing up the tunnel"),
    }
    GatewayTunnel::start(config, wg_key, answer)
        .await
        .map_err(|e| tracing::error!(error = %e, "tunnel bring-up failed; will retry"))
}

/// Renews the RA-TLS certificate when a quarter of its validity remains; failures are logged and retried at the
/// next tick.
async fn renew_certificate(identity: &Arc<RaTlsIdentity>) {
    if SystemTime::now() < identity.renew_at() {
        return;
    }
    // Attesting can take a while (a quote from the platform): off the async worker threads.
    let id = identity.clone();
    match tokio::task::spawn_blocking(move || id.renew_if_due(SystemTime::now())).await {
        Ok(Ok(true)) => {
            let not_after = identity.certificate().not_after();
            tracing::info!(not_after = %unix_secs(not_after), "RA-TLS certificate renewed");
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "RA-TLS certificate renewal failed; will retry")
        }
        Err(e) => {
            tracing::error!(error = %e, "RA-TLS certificate renewal task failed; will retry")
        }
    }
}

/// Follows the gateway policy file's modification time.
struct PolicyWatch {
    seen: Option<SystemTime>,
}

impl PolicyWatch {
    fn new(policy: &PolicyFile<GatewayPolicy>) -> Self {
        Self {
            seen: mtime(policy.path()),
        }
    }

    /// Reloads the policy when its file changed; a file that does not load leaves the previous policy in force.
    fn reload_if_changed(&mut self, policy: &PolicyFile<GatewayPolicy>) {
        let now = mtime(policy.path());
        if now == self.seen {
            return;
        }
        self.seen = now;
        match policy.reload() {
            Ok(()) => tracing::info!(path = %policy.path().display(), "gateway policy reloaded"),
            Err(e) => tracing::error!(error = %e,
                "gateway policy reload failed; keeping the previous policy"),
        }
    }
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
