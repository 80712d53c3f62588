//! The registration supervisor: when to register, when to restart the WireGuard session with the gateway and
//! when to build or update the tunnel, as a state machine fed events and time.
//!
//! Nothing here does I/O or reads a clock: the driver in [`crate::run`] passes the current [`Instant`] to every
//! call, feeds what it observed ([`Event`]) and carries out what [`Supervisor::poll`] asks for ([`Action`]),
//! reporting each outcome back as an event. The rules:
//!
//! - The first registration happens at once; later ones every re-registration interval the gateway gave, at once
//!   when a port's target state differs from the one last reported (or the forwarder was started on a new
//!   address, so the states were unknown at the registration that assigned it), and when the tunnel showed no life
//!   (no handshake completed, no authenticated packet from the gateway) for the handshake timeout, never shorter
//!   than the session's silence limit and at most once per sixth of that timeout.
//! - A renewed RA-TLS certificate ([`Event::CertificateRenewed`]) is presented at once by a registration while
//!   the tunnel is up: the gateway removes an instance whose evidence ended, and the evidence it holds is the old
//!   certificate's, which can end before the next interval.
//! - A failed registration or tunnel set-up is retried after the next [`Backoff`] delay; a success resets it. The
//!   tunnel keeps running meanwhile.
//! - When a reloaded gateway policy refuses the gateway the tunnel was set up with ([`Event::GatewayRevoked`]),
//!   the tunnel is stopped at once ([`Action::StopTunnel`]: the WireGuard peer and the forwarder on the tunnel
//!   address go away) and the agent registers again (at once unless a backoff is running), backing off while
//!   every gateway is refused: the revoked gateway's handshake fails under the new policy, so only a gateway it
//!   accepts brings the tunnel back. A reload that still accepts the gateway sends no event and changes nothing.
//! - When nothing authenticated came from the gateway for three keep-alive intervals and 5 s, the WireGuard
//!   session is restarted; this does not reset the liveness clock, so a path that stays broken still leads to a
//!   registration.
//! - With nothing to do the driver sleeps until [`Action::Sleep`]'s deadline: the next tick, or the end of a
//!   backoff if that comes first, so retries start on time.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use attestation::policy::GatewayPolicy;
use attestation::Claims;
use protocol::control::{PortPolicy, RegisterResponse};

use crate::backoff::Backoff;

/// How often the driver looks at the tunnel, the ports, the policy file and the certificate.
pub const TICK: Duration = Duration::from_millis(500);

/// What the gateway assigned at a registration, as far as supervision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The agent's tunnel address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The gateway's keep-alive interval (at least 1 s).
    pub keepalive: Duration,
    /// How often to register again.
    pub reregister: Duration,
}

impl Assignment {
    /// The assignment in a gateway's answer.
    pub fn of(answer: &RegisterResponse) -> Self {
        Self {
            address: answer.tunnel_address,
            prefix_len: answer.tunnel_prefix_len,
            keepalive: Duration::from_secs(answer.keepalive_secs.max(1)),
            reregister: Duration::from_secs(answer.reregister_secs),
        }
    }

    /// Silence after which the WireGuard session is restarted: three keep-alive intervals and 5 s.
    pub fn silence_limit(&self) -> Duration {
        3 * self.keepalive + Duration::from_secs(5)
    }

    fn same_network(&self, other: &Assignment) -> bool {
        self.address == other.address && self.prefix_len == other.prefix_len
    }
}

/// What the driver saw of the gateway peer: its latest handshake and authenticated packet, across sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerActivity {
    /// When the latest handshake with the gateway completed.
    pub last_handshake: Option<SystemTime>,
    /// When the latest authenticated packet from the gateway arrived.
    pub last_authenticated: Option<SystemTime>,
    /// How long ago `last_authenticated` was, when it was observed.
    pub heard_ago: Option<Duration>,
}

/// Something that happened, fed to [`Supervisor::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A gateway accepted the registration that reported `ports`.
    Registered {
        /// The port policies sent.
        ports: Vec<PortPolicy>,
        /// What the gateway assigned.
        assignment: Assignment,
    },
    /// No gateway accepted the registration (refused, unreachable, or refused by the gateway policy).
    RegistrationFailed,
    /// The tunnel asked for by [`Action::StartTunnel`] or [`Action::UpdateTunnel`] is running.
    TunnelReady,
    /// Building or updating the tunnel failed; it is gone.
    TunnelFailed,
    /// The gateway peer's activity as seen now.
    PeerSeen(PeerActivity),
    /// The port forwarder was (re)started on the tunnel address: the ports' states are worth reporting.
    ForwarderStarted,
    /// The ports' current states (after the forwarder signalled a possible change).
    PortStates(Vec<PortPolicy>),
    /// The agent's RA-TLS certificate was renewed: the gateway holds evidence that ends sooner than the new one.
    CertificateRenewed,
    /// The gateway policy was reloaded and refuses the gateway the tunnel was set up with.
    GatewayRevoked {
        /// Why the policy refuses it (the failed check).
        why: String,
    },
}

impl Event {
    /// What a reloaded gateway `policy` means for the tunnel to the gateway verified with `claims` (at the
    /// registration the tunnel follows): [`Event::GatewayRevoked`] if the policy refuses it, nothing if it still
    /// accepts it.
    pub fn recheck(policy: &GatewayPolicy, claims: &Claims) -> Option<Event> {
        policy
            .check(claims)
            .err()
            .map(|refused| Event::GatewayRevoked {
                why: refused.to_string(),
            })
    }
}

/// Why a registration is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No tunnel yet (first registration, the last set-up failed, or the gateway was revoked) or a retry after a
    /// failure.
    NoTunnel,
    /// A port's state changed since the last report, or the forwarder started.
    ReportPorts,
    /// The tunnel showed no life for `since`, at least the `timeout`.
    DeadTunnel {
        /// Time since the tunnel last showed life.
        since: Duration,
        /// The effective handshake timeout.
        timeout: Duration,
    },
    /// The re-registration interval passed.
    Interval,
    /// The agent's certificate was renewed: registering with it moves the end of the evidence the gateway holds
    /// (the gateway removes an instance whose evidence ended).
    Renewed,
}

/// What the driver must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Register now, reporting the ports' current states; answer with [`Event::Registered`] or
    /// [`Event::RegistrationFailed`].
    Register(Why),
    /// Start a fresh WireGuard session with the gateway (nothing heard from it for `silent_for`).
    RestartSession {
        /// How long nothing authenticated arrived.
        silent_for: Duration,
    },
    /// Build the tunnel for this assignment (replacing any running one: the address changed); answer with
    /// [`Event::TunnelReady`] or [`Event::TunnelFailed`].
    StartTunnel(Assignment),
    /// Update the running tunnel's gateway peer in place (same address); answer as for
    /// [`Action::StartTunnel`].
    UpdateTunnel(Assignment),
    /// Stop the tunnel and the port forwarder on its address now (the gateway was revoked); nothing to answer.
    StopTunnel,
    /// Nothing to do before `until` (the next tick, or the end of a backoff).
    Sleep {
        /// When to poll again.
        until: Instant,
    },
}

/// The running tunnel as supervision sees it.
#[derive(Debug, Clone)]
struct Live {
    assignment: Assignment,
    /// When the current WireGuard session began.
    started: Instant,
    /// When the tunnel was built or last seen alive; a session restart does not move it.
    alive: Instant,
    /// The latest handshake or authenticated packet seen, across sessions.
    last_alive: Option<SystemTime>,
    /// How long ago the gateway was last heard, and when that was observed.
    heard: Option<(Duration, Instant)>,
}

impl Live {
    fn new(assignment: Assignment, now: Instant) -> Self {
        Self {
            assignment,
            started: now,
            alive: now,
            last_alive: None,
            heard: None,
        }
    }

    fn observe(&mut self, activity: PeerActivity, now: Instant) {
        for at in [activity.last_handshake, activity.last_authenticated]
            .into_iter()
            .flatten()
        {
            if self.last_alive.is_none_or(|seen| at > seen) {
                self.last_alive = Some(at);
                self.alive = now;
            }
        }
        self.heard = activity.heard_ago.map(|ago| (ago, now));
    }

    /// Time since the gateway last sent an authenticated packet, or since the session started if that is sooner.
    fn since_heard(&self, now: Instant) -> Duration {
        let session = now.saturating_duration_since(self.started);
        match self.heard {
            Some((ago, at)) => (ago + now.saturating_duration_since(at)).min(session),
            None => session,
        }
    }
}

/// Where the tunnel stands.
#[derive(Debug, Clone)]
enum Tunnel {
    /// None (not yet registered, or the last set-up failed).
    Down,
    /// Being built or updated for this assignment; `kept` is the running state an update keeps.
    Building {
        assignment: Assignment,
        kept: Option<Box<Live>>,
    },
    /// Running.
    Up(Box<Live>),
}

/// The registration supervisor. See the module documentation for its rules.
#[derive(Debug)]
pub struct Supervisor {
    handshake_timeout: Duration,
    backoff: Backoff,
    /// No registration before this (the end of a backoff).
    next_attempt: Instant,
    last_registration: Option<Instant>,
    /// The ports' states must be reported at the next registration.
    report_now: bool,
    /// The certificate was renewed since the last successful registration.
    renewed: bool,
    /// The port policies of the last successful registration.
    reported: Option<Vec<PortPolicy>>,
    tunnel: Tunnel,
    /// An action decided by an event, handed out by the next poll.
    pending: Option<Action>,
    /// A registration or tunnel set-up was asked for and has not been answered.
    waiting: bool,
}

impl Supervisor {
    /// A supervisor that registers at once. `handshake_timeout` is the agent's configured timeout; `backoff`
    /// spaces retries.
    pub fn new(handshake_timeout: Duration, backoff: Backoff, now: Instant) -> Self {
        Self {
            handshake_timeout,
            backoff,
            next_attempt: now,
            last_registration: None,
            report_now: false,
            renewed: false,
            reported: None,
            tunnel: Tunnel::Down,
            pending: None,
            waiting: false,
        }
    }

    /// Whether a tunnel is running.
    pub fn tunnel_up(&self) -> bool {
        matches!(self.tunnel, Tunnel::Up(_))
    }

    /// Takes in what happened at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Registered { ports, assignment } => {
                self.waiting = false;
                self.backoff.reset();
                self.report_now = false;
                self.renewed = false;
                self.reported = Some(ports);
                self.last_registration = Some(now);
                let tunnel = std::mem::replace(&mut self.tunnel, Tunnel::Down);
                let (action, kept) = match tunnel {
                    Tunnel::Up(mut live) if live.assignment.same_network(&assignment) => {
                        live.assignment = assignment;
                        (Action::UpdateTunnel(assignment), Some(live))
                    }
                    _ => (Action::StartTunnel(assignment), None),
                };
                self.tunnel = Tunnel::Building { assignment, kept };
                self.pending = Some(action);
                self.waiting = true;
            }
            Event::RegistrationFailed => {
                self.waiting = false;
                let delay = self.backoff.next_delay();
                self.next_attempt = now + delay;
                tracing::warn!(retry_in = ?delay, tunnel_up = self.tunnel_up(),
                    "no gateway accepted the registration; still serving, retrying later");
            }
            Event::TunnelReady => {
                self.waiting = false;
                if let Tunnel::Building { assignment, kept } =
                    std::mem::replace(&mut self.tunnel, Tunnel::Down)
                {
                    let live = kept.unwrap_or_else(|| Box::new(Live::new(assignment, now)));
                    self.tunnel = Tunnel::Up(live);
                }
            }
            Event::TunnelFailed => {
                self.waiting = false;
                self.tunnel = Tunnel::Down;
                self.next_attempt = now + self.backoff.next_delay();
            }
            Event::PeerSeen(activity) => {
                if let Tunnel::Up(live) = &mut self.tunnel {
                    live.observe(activity, now);
                }
            }
            Event::ForwarderStarted => self.report_now = true,
            Event::CertificateRenewed => self.renewed = true,
            Event::GatewayRevoked { why } => self.revoke(&why),
            Event::PortStates(ports) => {
                // Discovery signals every event and resync: only a state that actually flipped is reported.
                if self.reported.as_ref() != Some(&ports) {
                    tracing::info!(
                        ?ports,
                        "a port's target state changed; registering again to report it"
                    );
                    self.report_now = true;
                }
            }
        }
    }

    /// Stops the tunnel to a gateway the policy no longer accepts, and registers again at once (with whichever
    /// gateway the policy accepts; failures back off as usual).
    fn revoke(&mut self, why: &str) {
        if matches!(self.tunnel, Tunnel::Down) {
            tracing::info!(%why, "the reloaded gateway policy refuses the last gateway; no tunnel to stop");
            return;
        }
        tracing::info!(%why, "gateway revoked; stopping the tunnel, then registering again");
        self.tunnel = Tunnel::Down;
        self.pending = Some(Action::StopTunnel);
        // A set-up asked for before the revocation is moot: its answer finds no tunnel being built.
        self.waiting = false;
        self.reported = None;
        self.last_registration = None;
    }

    /// The next thing to do at `now`; [`Action::Sleep`] when there is nothing.
    pub fn poll(&mut self, now: Instant) -> Action {
        if let Some(action) = self.pending.take() {
            return action;
        }
        if self.waiting {
            return self.sleep(now);
        }
        if let Tunnel::Up(live) = &mut self.tunnel {
            // The gateway keeps the session alive with keep-alives; silence for three intervals means it lost
            // the session (restart) or the path is down: start a fresh handshake.
            let silent_for = live.since_heard(now);
            if silent_for >= live.assignment.silence_limit() {
                live.started = now;
                return Action::RestartSession { silent_for };
            }
        }
        if now < self.next_attempt {
            return self.sleep(now);
        }
        match self.due(now) {
            Some(why) => {
                if let Why::DeadTunnel { since, timeout } = why {
                    tracing::warn!(
                        ?since,
                        ?timeout,
                        "no tunnel handshake within the timeout; registering again"
                    );
                }
                self.waiting = true;
                Action::Register(why)
            }
            None => self.sleep(now),
        }
    }

    /// Why a registration is due at `now`, if it is (ignoring the backoff).
    fn due(&self, now: Instant) -> Option<Why> {
        if self.report_now {
            return Some(Why::ReportPorts);
        }
        let (Tunnel::Up(live), Some(at)) = (&self.tunnel, self.last_registration) else {
            return Some(Why::NoTunnel);
        };
        if self.renewed {
            return Some(Why::Renewed);
        }
        // Never shorter than the silence that restarts the session, so keep-alives of a healthy idle tunnel always
        // arrive in time; at most once per sixth of the timeout.
        let timeout = self.handshake_timeout.max(live.assignment.silence_limit());
        let since = now.saturating_duration_since(live.alive);
        let since_registration = now.saturating_duration_since(at);
        if since >= timeout && since_registration >= timeout / 6 {
            return Some(Why::DeadTunnel { since, timeout });
        }
        (since_registration >= live.assignment.reregister).then_some(Why::Interval)
    }

    /// Sleep until the next tick, or the end of the backoff if that is sooner.
    fn sleep(&self, now: Instant) -> Action {
        let tick = now + TICK;
        let until = if self.next_attempt > now {
            self.next_attempt.min(tick)
        } else {
            tick
        };
        Action::Sleep { until }
    }
}

#[cfg(test)]
mod tests;
