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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use attestation::policy::{GatewayPolicy, PolicyFile, PolicyFn};
use attestation::ratls::{self, CertOptions, RaTlsIdentity, RaTlsVerifier};
use attestation::tdx::{CollateralConfig, CollateralSource};
use attestation::{Attester, TrustAnchors, Verifier};
use protocol::control::{
    InstanceId, PortPolicy, RegisterRequest, RegisterResponse, WireGuardKey, PROTOCOL_VERSION,
};
use protocol::tunnel::{
    Endpoint, EndpointConfig, InboundFilter, PeerConfig, PrivateKey, PublicKey,
};

use crate::backoff::Backoff;
use crate::client::{register_once, AttemptError, GatewayUrl};
use crate::config::AgentConfig;
use crate::docker::{Discovery, DiscoveryConfig, DiscoveryTask};
use crate::forward::{ForwardConfig, Forwarder, PortRule};
use crate::state::StateDir;
use crate::target::Target;

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

async fn resolve(endpoint: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(endpoint)
        .await
        .ok()?
        .find(|a| a.is_ipv4())
}

/// The running tunnel and what it was built from.
struct Tunnel {
    endpoint: Endpoint,
    answer: RegisterResponse,
    gateway_key: PublicKey,
    /// When the current WireGuard session with the gateway began (reset by [`Tunnel::restart_session`]).
    started: Instant,
    /// When the tunnel was built or was last seen alive (checked every loop turn); a session restart does not
    /// move it.
    alive: Instant,
    /// The latest handshake or authenticated packet seen from the gateway, across sessions.
    last_alive: Option<SystemTime>,
}

impl Tunnel {
    async fn start(
        config: &AgentConfig,
        key: &PrivateKey,
        answer: RegisterResponse,
    ) -> Result<Self, String> {
        let mut c = EndpointConfig::new(
            key.clone(),
            config.tunnel.listen_port,
            answer.tunnel_address,
            answer.tunnel_prefix_len,
        );
        c.tun_name = config.tunnel.interface.clone();
        c.mtu = config.tunnel.mtu;
        // Only the declared ports (and ping) get in; SYNs to any other port are refused with a reset.
        c.inbound_filter = Some(InboundFilter::new(
            config.ports.iter().map(|p| p.port),
            true,
        ));
        let endpoint = Endpoint::start(c).await.map_err(|e| e.to_string())?;
        let gateway_key = answer.gateway.public_key;
        let tunnel = Self {
            endpoint,
            gateway_key,
            answer,
            started: Instant::now(),
            alive: Instant::now(),
            last_alive: None,
        };
        tunnel.add_gateway_peer().await?;
        tracing::info!(interface = %tunnel.endpoint.tun_name(), address = %tunnel.answer.tunnel_address,
            prefix = tunnel.answer.tunnel_prefix_len, gateway = %tunnel.answer.gateway.tunnel_address,
            endpoint = %tunnel.answer.gateway.endpoint, keepalive_secs = tunnel.answer.keepalive_secs,
            "tunnel up");
        Ok(tunnel)
    }

    async fn add_gateway_peer(&self) -> Result<(), String> {
        let endpoint = resolve(&self.answer.gateway.endpoint)
            .await
            .ok_or_else(|| {
                format!(
                    "cannot resolve the gateway endpoint {}",
                    self.answer.gateway.endpoint
                )
            })?;
        let peer = PeerConfig::new(self.gateway_key, self.answer.gateway.tunnel_address)
            .with_endpoint(endpoint)
            .with_keepalive(Duration::from_secs(self.answer.keepalive_secs.max(1)));
        if self.endpoint.peer(&self.gateway_key).is_some() {
            self.endpoint.update_peer(peer).map_err(|e| e.to_string())
        } else {
            self.endpoint.add_peer(peer).map_err(|e| e.to_string())
        }
    }

    /// Time since the tunnel last showed life: a completed handshake or an authenticated packet from the gateway,
    /// in this session or an earlier one (or since the tunnel was built, if never). Session restarts do not reset
    /// it, so a path that stays broken is noticed however often the session is restarted.
    fn since_alive(&mut self) -> Duration {
        if let Some(p) = self.endpoint.peer(&self.gateway_key) {
            for at in [p.last_handshake, p.last_authenticated]
                .into_iter()
                .flatten()
            {
                if self.last_alive.is_none_or(|seen| at > seen) {
                    self.last_alive = Some(at);
                    self.alive = Instant::now();
                }
            }
        }
        self.alive.elapsed()
    }

    /// Silence after which the WireGuard session is restarted: three of the gateway's keep-alive intervals and 5 s.
    fn silence_limit(&self) -> Duration {
        Duration::from_secs(3 * self.answer.keepalive_secs.max(1) + 5)
    }

    /// Time since the gateway last sent an authenticated packet (or since the session started, if none yet).
    fn since_heard(&self) -> Duration {
        let last = self
            .endpoint
            .peer(&self.gateway_key)
            .and_then(|p| p.last_authenticated);
        self.since(last)
    }

    fn since(&self, at: Option<SystemTime>) -> Duration {
        let started = self.started.elapsed();
        match at {
            Some(t) => SystemTime::now()
                .duration_since(t)
                .unwrap_or(Duration::ZERO)
                .min(started),
            None => started,
        }
    }

    /// Starts a fresh WireGuard session with the gateway (its side may have lost the old one, e.g. in a restart):
    /// the peer is removed and added again, and the next keep-alive begins a handshake.
    async fn restart_session(&mut self) -> Result<(), String> {
        let _ = self.endpoint.remove_peer(&self.gateway_key);
        self.started = Instant::now();
        self.add_gateway_peer().await
    }

    /// Applies a new answer: same address => update the gateway peer in place; new address => rebuild.
    async fn apply(
        self,
        config: &AgentConfig,
        key: &PrivateKey,
        answer: RegisterResponse,
    ) -> Result<Self, String> {
        if answer.tunnel_address == self.answer.tunnel_address
            && answer.tunnel_prefix_len == self.answer.tunnel_prefix_len
        {
            let mut this = self;
            let new_key = answer.gateway.public_key;
            if new_key != this.gateway_key {
                tracing::info!("the gateway's WireGuard key changed; replacing the peer");
                let _ = this.endpoint.remove_peer(&this.gateway_key);
                this.gateway_key = new_key;
            }
            this.answer = answer;
            this.add_gateway_peer().await?;
            Ok(this)
        } else {
            tracing::warn!(old = %self.answer.tunnel_address, new = %answer.tunnel_address,
                "the gateway assigned a new tunnel address; rebuilding the tunnel");
            self.endpoint.shutdown().await;
            Self::start(config, key, answer).await
        }
    }
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

    let rules = config
        .ports
        .iter()
        .map(|p| {
            PortRule::try_from(p)
                .map_err(|e| setup("ports")(format!("port {} target {:?}: {e}", p.port, p.target)))
        })
        .collect::<Result<Vec<_>, _>>()?;
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

    let gateways = config
        .gateways
        .iter()
        .map(|g| GatewayUrl::parse(g).map_err(|e| setup("gateways")(format!("{g}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
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

/// Registers until it succeeds, brings the tunnel up, then keeps registering on the interval and whenever
/// handshakes stop. Never returns on its own.
async fn registration_loop(
    config: &AgentConfig,
    registrar: &Registrar,
    wg_key: &PrivateKey,
    identity: &Arc<RaTlsIdentity>,
    policy: &PolicyFile<GatewayPolicy>,
    mut forwarding: Forwarding,
) {
    let mut report_now = false;
    let mut reported: Option<Vec<PortPolicy>> = None;
    let timing = &config.registration;
    let mut backoff = Backoff::new(timing.retry_initial(), timing.retry_max());
    let handshake_timeout = Duration::from_secs(config.tunnel.handshake_timeout_secs);
    let mut tunnel: Option<Tunnel> = None;
    let mut next_attempt = Instant::now();
    let mut last_registration: Option<Instant> = None;
    let policy_mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen_mtime = policy_mtime(policy.path());
    if tunnel.is_none() {
        tracing::info!("boot 4/5: registering with the gateway");
    }
    loop {
        if SystemTime::now() >= identity.renew_at() {
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
        let mtime = policy_mtime(policy.path());
        if mtime != seen_mtime {
            seen_mtime = mtime;
            match policy.reload() {
                Ok(()) => {
                    tracing::info!(path = %policy.path().display(), "gateway policy reloaded")
                }
                Err(e) => tracing::error!(error = %e,
                    "gateway policy reload failed; keeping the previous policy"),
            }
        }
        if let Some(t) = tunnel.as_mut() {
            // The gateway keeps the session alive with keep-alives; silence for three intervals means it lost
            // the session (restart) or the path is down: start a fresh handshake.
            if t.since_heard() >= t.silence_limit() {
                tracing::warn!(since = ?t.since_heard(), "nothing heard from the gateway; restarting the WireGuard session");
                if let Err(e) = t.restart_session().await {
                    tracing::error!(error = %e, "restarting the WireGuard session failed");
                }
            }
        }
        if let Some(t) = &tunnel {
            if forwarding.ensure(t.answer.tunnel_address.into()).await {
                // Report the ports' target states, unknown at the registration that assigned the address.
                report_now = true;
            }
        }
        if forwarding.changed() {
            // Discovery signals every event and resync; register only when a port's state actually flipped.
            let now = forwarding.policies(&registrar.request.ports).await;
            if reported.as_ref() != Some(&now) {
                tracing::info!(ports = ?now, "a port's target state changed; registering again to report it");
                report_now = true;
            }
        }
        let due = report_now
            || match (tunnel.as_mut(), last_registration) {
                (None, _) | (_, None) => true,
                (Some(t), Some(at)) => {
                    // No handshake and nothing from the gateway within the timeout (never shorter than the
                    // silence that restarts the session, so keep-alives of a healthy idle tunnel always arrive in
                    // time): register again, at most once per sixth of the timeout.
                    let timeout = handshake_timeout.max(t.silence_limit());
                    let since = t.since_alive();
                    let stale = since >= timeout && at.elapsed() >= timeout / 6;
                    if stale && Instant::now() >= next_attempt {
                        tracing::warn!(
                            ?since,
                            ?timeout,
                            "no tunnel handshake within the timeout; registering again"
                        );
                    }
                    stale || at.elapsed() >= Duration::from_secs(t.answer.reregister_secs)
                }
            };
        if due && Instant::now() >= next_attempt {
            let ports = forwarding.policies(&registrar.request.ports).await;
            match registrar.register(ports.clone()).await {
                Ok((gateway, answer)) => {
                    backoff.reset();
                    report_now = false;
                    reported = Some(ports);
                    last_registration = Some(Instant::now());
                    tracing::info!(%gateway, address = %answer.tunnel_address, reregister_secs = answer.reregister_secs,
                        "registered");
                    tunnel = match tunnel.take() {
                        None => {
                            tracing::info!("boot 5/5: bringing up the tunnel");
                            match Tunnel::start(config, wg_key, answer).await {
                                Ok(t) => Some(t),
                                Err(e) => {
                                    tracing::error!(error = %e, "tunnel bring-up failed; will retry");
                                    next_attempt = Instant::now() + backoff.next_delay();
                                    None
                                }
                            }
                        }
                        Some(t) => match t.apply(config, wg_key, answer).await {
                            Ok(t) => Some(t),
                            Err(e) => {
                                tracing::error!(error = %e, "updating the tunnel failed; will retry");
                                next_attempt = Instant::now() + backoff.next_delay();
                                None
                            }
                        },
                    };
                }
                Err(_) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(retry_in = ?delay, tunnel_up = tunnel.is_some(),
                        "no gateway accepted the registration; still serving, retrying later");
                    next_attempt = Instant::now() + delay;
                }
            }
        }
        // Wake for the next retry on time (the backoff's spacing), otherwise check again in half a second.
        let until_retry = next_attempt.saturating_duration_since(Instant::now());
        let nap = if until_retry.is_zero() {
            TICK
        } else {
            until_retry.min(TICK)
        };
        tokio::time::sleep(nap).await;
    }
}

/// How often the registration loop looks at the tunnel, the policy file and the certificate.
const TICK: Duration = Duration::from_millis(500);

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
