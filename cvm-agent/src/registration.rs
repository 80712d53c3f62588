//! The registration driver: the I/O around the [`Supervisor`].
//!
//! Each tick it renews the RA-TLS certificate when due, reloads a changed gateway policy, feeds the supervisor
//! what the tunnel and the ports did, then carries out what the supervisor asks for (register with the gateways
//! in order, restart the WireGuard session, build, update or stop the tunnel) until it says to sleep. While asleep
//! it also watches the tunnel endpoint and the port forwarder: if either stops on its own the driver ends with an
//! error, so the agent exits instead of running on without them. On cancellation it stops the forwarder and the
//! tunnel and returns.
//!
//! Revocation: the driver keeps the verified claims of the gateway that accepted the registration the tunnel
//! follows (from that registration's RA-TLS handshake). When the gateway policy file reloads, those claims are
//! checked against the new policy; if it refuses them, the driver logs a warning naming the gateway and the failed
//! check and feeds [`Event::GatewayRevoked`], and the supervisor has the tunnel and the port forwarder stopped at
//! once ([`Action::StopTunnel`]) before registering again, which fails at the handshake until some gateway passes
//! the policy. A reload that still accepts the gateway changes nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use attestation::policy::{GatewayPolicy, PolicyFile, Reload};
use attestation::ratls::{RaTlsIdentity, RaTlsVerifier};
use attestation::Claims;
use protocol::control::{PortPolicy, RegisterRequest, RegisterResponse};
use protocol::tunnel::PrivateKey;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::{register_once, AttemptError, GatewayUrl};
use crate::config::AgentConfig;
use crate::docker::Discovery;
use crate::forward::{ForwardConfig, Forwarder};
use crate::supervisor::{Action, Assignment, Event, Supervisor};
use crate::tasks::Ended;
use crate::tunnel::GatewayTunnel;

/// Why the driver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The tunnel endpoint stopped (a data-plane thread failed).
    #[error("the tunnel endpoint stopped")]
    TunnelStopped,
    /// A task of the port forwarder ended.
    #[error("the port forwarder stopped: {0}")]
    Forwarder(#[source] Ended),
}

/// Everything a registration attempt needs.
pub(crate) struct Registrar {
    pub(crate) gateways: Vec<GatewayUrl>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) verifier: Arc<RaTlsVerifier>,
    pub(crate) request: RegisterRequest,
    /// The owner's signed app policy carried in every registration, re-read when its file changes.
    pub(crate) app_policy: Option<crate::app_policy::AppPolicyFile>,
    pub(crate) timeout: std::time::Duration,
}

impl Registrar {
    /// One pass over the gateways in order; the first answer wins, with the claims its handshake verified.
    async fn register(
        &self,
        ports: Vec<PortPolicy>,
    ) -> Result<(RegisteredWith, RegisterResponse), Vec<AttemptError>> {
        let request = RegisterRequest {
            ports,
            app_policy: self.app_policy.as_ref().map(|f| f.current()),
            ..self.request.clone()
        };
        let mut errors = Vec::new();
        for gateway in &self.gateways {
            tracing::info!(%gateway, "registering: connecting and verifying the gateway's evidence");
            let verifier = self.verifier.clone();
            let mut claims = None;
            let result = register_once(gateway, self.tls.clone(), &request, self.timeout, |verified| {
                // Remembered by the verifier that just accepted it; verified again should it be forgotten.
                claims = verifier.claims_for(&verified.certificate).or_else(|| {
                    verifier
                        .verify_certificate(&verified.certificate, SystemTime::now())
                        .ok()
                });
                tracing::info!(%gateway, claims = ?claims.as_deref().map(|c| c.summary().to_string()),
                    "gateway evidence verified against the gateway policy; sending the registration");
            })
            .await;
            match result {
                Ok(answer) => {
                    let with = RegisteredWith {
                        gateway: gateway.clone(),
                        claims,
                    };
                    return Ok((with, answer));
                }
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

/// The gateway that accepted a registration, as its RA-TLS handshake verified it.
#[derive(Debug, Clone)]
struct RegisteredWith {
    gateway: GatewayUrl,
    /// Its verified claims; `None` only if the verifier could not say (then no policy can vouch for it).
    claims: Option<Arc<Claims>>,
}

impl RegisteredWith {
    /// What a reloaded `policy` means for a tunnel to this gateway (see [`Event::recheck`]).
    fn recheck(&self, policy: &GatewayPolicy) -> Option<Event> {
        match &self.claims {
            Some(claims) => Event::recheck(policy, claims),
            None => Some(Event::GatewayRevoked {
                why: "its verified claims are unknown, so no policy can accept it".into(),
            }),
        }
    }
}

/// The port forwarder and what it is built from.
pub(crate) struct Forwarding {
    discovery: Option<Discovery>,
    running: Option<(Forwarder, IpAddr)>,
    /// The running forwarder's port state changes.
    changes: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Forwarding {
    /// Not running yet; `discovery` is required when a port has a Docker target.
    pub(crate) fn new(discovery: Option<Discovery>) -> Self {
        Self {
            discovery,
            running: None,
            changes: None,
        }
    }

    /// Makes the forwarder listen on `address`, (re)starting it when it does not already. Returns whether it
    /// was (re)started.
    async fn ensure(&mut self, config: &AgentConfig, address: IpAddr) -> bool {
        if matches!(&self.running, Some((_, at)) if *at == address) {
            return false;
        }
        if let Some((old, at)) = self.running.take() {
            tracing::info!(old = %at, new = %address, "tunnel address changed; restarting the port forwarder");
            old.shutdown().await;
        }
        let mut forward = ForwardConfig::new(address, config.ports.clone());
        forward.probe_interval = config.forwarding.probe_interval();
        match Forwarder::start(forward, self.discovery.clone()).await {
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

    /// Resolves when a task of the running forwarder ended on its own; never while none runs.
    async fn failed(&self) -> Ended {
        match &self.running {
            Some((f, _)) => f.ended().await,
            None => std::future::pending().await,
        }
    }

    async fn shutdown(&mut self) {
        self.changes = None;
        if let Some((f, _)) = self.running.take() {
            f.shutdown().await;
        }
    }
}

/// The registration driver and everything it owns.
pub(crate) struct Driver {
    pub(crate) config: AgentConfig,
    pub(crate) registrar: Registrar,
    pub(crate) wg_key: PrivateKey,
    pub(crate) identity: Arc<RaTlsIdentity>,
    pub(crate) policy: Arc<PolicyFile<GatewayPolicy>>,
    pub(crate) forwarding: Forwarding,
}

/// What the driver keeps between ticks.
struct State {
    supervisor: Supervisor,
    tunnel: Option<GatewayTunnel>,
    /// The answer of the latest registration, until the tunnel follows it.
    answer: Option<RegisterResponse>,
    /// The gateway of the latest registration (the one the tunnel follows once built), re-checked when the
    /// policy reloads.
    gateway: Option<RegisteredWith>,
}

impl Driver {
    /// Runs until `cancel` is cancelled (then stops the forwarder and the tunnel and returns `Ok`), or until the
    /// tunnel endpoint or the forwarder stops on its own.
    pub(crate) async fn run(mut self, cancel: CancellationToken) -> Result<(), DriverError> {
        let timing = &self.config.registration;
        let mut state = State {
            supervisor: Supervisor::new(
                self.config.tunnel.handshake_timeout,
                Backoff::new(timing.retry_initial(), timing.retry_max()),
                Instant::now(),
            ),
            tunnel: None,
            answer: None,
            gateway: None,
        };
        tracing::info!("boot 4/5: registering with the gateway");
        let result = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                r = self.tick(&mut state) => if let Err(e) = r { break Err(e) },
            }
        };
        self.forwarding.shutdown().await;
        if let Some(t) = state.tunnel.take() {
            t.shutdown().await;
        }
        result
    }

    /// One tick: observe, act until the supervisor says to sleep, sleep.
    async fn tick(&mut self, state: &mut State) -> Result<(), DriverError> {
        if renew_certificate(&self.identity).await {
            // The gateway holds the old certificate's evidence and removes the instance when it ends: register
            // with the new one now.
            state
                .supervisor
                .handle(Instant::now(), Event::CertificateRenewed);
        }
        if reload_policy(&self.policy) {
            self.recheck_gateway(state);
        }
        // A revoked tunnel is about to be stopped: nothing to observe or forward there.
        let tunnel = state
            .tunnel
            .as_ref()
            .filter(|_| state.supervisor.tunnel_up());
        if let Some(t) = tunnel {
            state
                .supervisor
                .handle(Instant::now(), Event::PeerSeen(t.activity()));
            let address = t.answer().tunnel_address.into();
            if self.forwarding.ensure(&self.config, address).await {
                // Report the ports' target states, unknown at the registration that assigned the address.
                state
                    .supervisor
                    .handle(Instant::now(), Event::ForwarderStarted);
            }
        }
        if self.forwarding.changed() {
            let ports = self
                .forwarding
                .policies(&self.registrar.request.ports)
                .await;
            state
                .supervisor
                .handle(Instant::now(), Event::PortStates(ports));
        }
        loop {
            let event = match state.supervisor.poll(Instant::now()) {
                Action::Sleep { until } => {
                    let tunnel_stopped = async {
                        match &state.tunnel {
                            Some(t) => t.endpoint().stopped().await,
                            None => std::future::pending().await,
                        }
                    };
                    return tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => Ok(()),
                        _ = tunnel_stopped => Err(DriverError::TunnelStopped),
                        ended = self.forwarding.failed() => Err(DriverError::Forwarder(ended)),
                    };
                }
                Action::RestartSession { silent_for } => {
                    tracing::warn!(since = ?silent_for, "nothing heard from the gateway; restarting the WireGuard session");
                    if let Some(t) = state.tunnel.as_mut() {
                        if let Err(e) = t.restart_session().await {
                            tracing::error!(error = %e, "restarting the WireGuard session failed");
                        }
                    }
                    continue;
                }
                Action::StopTunnel => {
                    self.stop_tunnel(state).await;
                    continue;
                }
                Action::Register(_) => self.register(state).await,
                action @ (Action::StartTunnel(_) | Action::UpdateTunnel(_)) => {
                    let update = matches!(action, Action::UpdateTunnel(_));
                    state.tunnel = match (state.answer.take(), state.tunnel.take()) {
                        (Some(a), Some(t)) if update => t.update(a).await.map_err(|e| {
                            tracing::error!(error = %e, "updating the tunnel failed; will retry")
                        }),
                        (Some(a), old) => self.start_tunnel(old, a).await,
                        // Cannot happen: a set-up is only asked for right after a registration.
                        (None, _) => Err(()),
                    }
                    .ok();
                    if state.tunnel.is_some() {
                        Event::TunnelReady
                    } else {
                        Event::TunnelFailed
                    }
                }
            };
            state.supervisor.handle(Instant::now(), event);
        }
    }

    /// Registers with the ports' current states; the outcome as an event for the supervisor.
    async fn register(&self, state: &mut State) -> Event {
        let ports = self
            .forwarding
            .policies(&self.registrar.request.ports)
            .await;
        match self.registrar.register(ports.clone()).await {
            Ok((with, answer)) => {
                tracing::info!(gateway = %with.gateway, address = %answer.tunnel_address,
                    reregister_secs = answer.reregister_secs, "registered");
                let assignment = Assignment::of(&answer);
                state.answer = Some(answer);
                state.gateway = Some(with);
                Event::Registered { ports, assignment }
            }
            Err(errors) => {
                self.revoke_if_refused(state, &errors);
                Event::RegistrationFailed
            }
        }
    }

    /// When the gateway of the tunnel now presents an identity the gateway policy refuses (it restarted with
    /// another configuration or code under the same address and WireGuard key), the tunnel goes at once, as on a
    /// policy reload that refuses it.
    fn revoke_if_refused(&self, state: &mut State, errors: &[AttemptError]) {
        if state.tunnel.is_none() {
            return;
        }
        let Some(with) = &state.gateway else {
            return;
        };
        let name = with.gateway.to_string();
        let Some(why) = errors.iter().find_map(|e| e.policy_refusal_of(&name)) else {
            return;
        };
        tracing::warn!(gateway = %with.gateway, reason = %why,
            "gateway revoked: the gateway of the tunnel now presents an identity the gateway policy refuses; \
            tearing the tunnel down");
        state.supervisor.handle(
            Instant::now(),
            Event::GatewayRevoked {
                why: why.to_string(),
            },
        );
    }

    /// Checks the gateway of the tunnel against the just reloaded policy; tells the supervisor if it is refused.
    fn recheck_gateway(&self, state: &mut State) {
        if state.tunnel.is_none() {
            return;
        }
        let Some(with) = &state.gateway else {
            return;
        };
        if let Some(event) = with.recheck(&self.policy.current()) {
            if let Event::GatewayRevoked { why } = &event {
                tracing::warn!(gateway = %with.gateway,
                    claims = ?with.claims.as_deref().map(|c| c.summary().to_string()), reason = %why,
                    "gateway revoked: the reloaded gateway policy refuses the gateway of the tunnel; tearing the \
                    tunnel down");
            }
            state.supervisor.handle(Instant::now(), event);
        }
    }

    /// Stops the tunnel (its WireGuard peer goes with the endpoint) and the port forwarder on its address.
    async fn stop_tunnel(&mut self, state: &mut State) {
        state.answer = None;
        state.gateway = None;
        self.forwarding.shutdown().await;
        if let Some(t) = state.tunnel.take() {
            let address = t.answer().tunnel_address;
            t.shutdown().await;
            tracing::warn!(%address, "tunnel and port forwarder stopped");
        }
    }

    /// Builds the tunnel for `answer`, shutting down the `old` one first (the gateway assigned a new address).
    /// Failures are logged.
    async fn start_tunnel(
        &self,
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
        GatewayTunnel::start(&self.config, &self.wg_key, answer)
            .await
            .map_err(|e| tracing::error!(error = %e, "tunnel bring-up failed; will retry"))
    }
}

/// Renews the RA-TLS certificate when a quarter of its validity remains; failures are logged and retried at the
/// next tick. Returns whether a new certificate is in use.
async fn renew_certificate(identity: &Arc<RaTlsIdentity>) -> bool {
    if SystemTime::now() < identity.renew_at() {
        return false;
    }
    // Attesting can take a while (a quote from the platform): off the async worker threads.
    let id = identity.clone();
    match tokio::task::spawn_blocking(move || id.renew_if_due(SystemTime::now())).await {
        Ok(Ok(true)) => {
            let not_after = identity.certificate().not_after();
            tracing::info!(not_after = %unix_secs(not_after), "RA-TLS certificate renewed");
            true
        }
        Ok(Ok(false)) => false,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "RA-TLS certificate renewal failed; will retry");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "RA-TLS certificate renewal task failed; will retry");
            false
        }
    }
}

/// Reloads the gateway policy when its file changed; a file that does not load leaves the previous policy in force.
/// Returns whether a new policy is in force.
fn reload_policy(policy: &PolicyFile<GatewayPolicy>) -> bool {
    match policy.reload_if_changed() {
        Reload::Unchanged => false,
        Reload::Reloaded => {
            tracing::info!(path = %policy.path().display(), "gateway policy reloaded");
            true
        }
        Reload::Failed(e) => {
            tracing::error!(error = %e, "gateway policy reload failed; keeping the previous policy");
            false
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
