//! Unit tests of the supervision state machine, driven with virtual time.

use super::*;

const KEEPALIVE: Duration = Duration::from_secs(2);

fn assignment(address: [u8; 4]) -> Assignment {
    Assignment {
        address: Ipv4Addr::from(address),
        prefix_len: 8,
        keepalive: KEEPALIVE,
        reregister: Duration::from_secs(600),
    }
}

fn ports(up: bool) -> Vec<PortPolicy> {
    vec![PortPolicy {
        port: 8080,
        proxy_protocol: false,
        target_state: Some(if up {
            protocol::control::TargetState::Up
        } else {
            protocol::control::TargetState::Down
        }),
    }]
}

/// A supervisor on a virtual clock, with the wall clock moving along.
struct World {
    sup: Supervisor,
    t0: Instant,
    now: Instant,
    wall0: SystemTime,
}

impl World {
    fn new(handshake_timeout_secs: u64) -> Self {
        let t0 = Instant::now();
        let backoff = Backoff::seeded(Duration::from_millis(250), Duration::from_secs(4), 11);
        Self {
            sup: Supervisor::new(Duration::from_secs(handshake_timeout_secs), backoff, t0),
            t0,
            now: t0,
            wall0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn wall(&self) -> SystemTime {
        self.wall0 + (self.now - self.t0)
    }

    fn secs(&self) -> f64 {
        (self.now - self.t0).as_secs_f64()
    }

    fn handle(&mut self, event: Event) {
        self.sup.handle(self.now, event);
    }

    fn poll(&mut self) -> Action {
        self.sup.poll(self.now)
    }

    /// Polls; on a sleep, moves the clock to its end and returns `None`.
    fn step(&mut self) -> Option<Action> {
        match self.poll() {
            Action::Sleep { until } => {
                assert!(until > self.now, "a sleep must move time forward");
                self.now = until;
                None
            }
            action => Some(action),
        }
    }

    /// Runs the clock until an action other than a sleep comes, or `limit` passes.
    fn run_until_action(&mut self, limit: Duration) -> Option<Action> {
        let end = self.now + limit;
        while self.now < end {
            if let Some(a) = self.step() {
                return Some(a);
            }
        }
        None
    }

    /// A registration fails now: the next action (within 10 s) and how long after the failure it came.
    fn fail_then_retry(&mut self) -> (Option<Action>, Duration) {
        let failed_at = self.now;
        self.handle(Event::RegistrationFailed);
        let next = self.run_until_action(Duration::from_secs(10));
        (next, self.now - failed_at)
    }

    /// The registration asked for succeeds at 10.0.0.2 with its port up; the supervisor asks for `tunnel`
    /// (`Action::StartTunnel` or `Action::UpdateTunnel`) of that assignment, which is then ready.
    fn registered(&mut self, tunnel: fn(Assignment) -> Action) {
        self.handle(Event::Registered {
            ports: ports(true),
            assignment: assignment([10, 0, 0, 2]),
        });
        assert_eq!(self.poll(), tunnel(assignment([10, 0, 0, 2])));
        self.handle(Event::TunnelReady);
    }

    /// `failure` is handled now: the next action, at least half the first backoff step (125 ms) later, is a
    /// registration because of `why`.
    fn retried_after_backoff(&mut self, failure: Event, why: Why) {
        let failed_at = self.now;
        self.handle(failure);
        let next = self.run_until_action(Duration::from_secs(5));
        assert_eq!(next, Some(Action::Register(why)));
        assert!(self.now - failed_at >= Duration::from_millis(125));
    }

    /// A registration fails now and the retry comes within the first backoff step (250 ms).
    fn backoff_started_over(&mut self) {
        let (_, delay) = self.fail_then_retry();
        assert!(delay <= Duration::from_millis(250), "{delay:?}");
    }

    /// Registers with `assignment` and brings the tunnel up.
    fn register(&mut self, address: [u8; 4], ports: Vec<PortPolicy>) {
        assert!(matches!(self.poll(), Action::Register(_)));
        self.handle(Event::Registered {
            ports,
            assignment: assignment(address),
        });
        assert!(matches!(
            self.poll(),
            Action::StartTunnel(_) | Action::UpdateTunnel(_)
        ));
        self.handle(Event::TunnelReady);
    }

    /// Registers at 10.0.0.2 with its port up, lets the re-registration interval pass with the gateway heard, and
    /// checks that the interval asks for a registration.
    fn register_then_reach_the_interval(&mut self) {
        self.register([10, 0, 0, 2], ports(true));
        self.now += Duration::from_secs(600);
        self.heard();
        assert_eq!(self.poll(), Action::Register(Why::Interval));
    }

    /// The gateway is heard right now (a keep-alive arrived).
    fn heard(&mut self) {
        let now = self.wall();
        self.handle(Event::PeerSeen(PeerActivity {
            last_handshake: None,
            last_authenticated: Some(now),
            heard_ago: Some(Duration::ZERO),
        }));
    }
}

#[test]
fn registers_at_once_then_builds_the_tunnel_then_idles() {
    let mut w = World::new(180);
    assert_eq!(w.poll(), Action::Register(Why::NoTunnel));
    // Waiting for the answer: nothing else is asked for.
    assert!(matches!(w.poll(), Action::Sleep { .. }));
    w.registered(Action::StartTunnel);
    assert!(w.sup.tunnel_up());
    assert_eq!(
        w.poll(),
        Action::Sleep {
            until: w.now + TICK
        }
    );
}

#[test]
fn failures_back_off_with_jitter_and_retries_start_on_time() {
    let mut w = World::new(180);
    assert_eq!(w.step(), Some(Action::Register(Why::NoTunnel)));
    let mut delays = Vec::new();
    for i in 0..6 {
        let (next, delay) = w.fail_then_retry();
        assert_eq!(next, Some(Action::Register(Why::NoTunnel)), "attempt {i}");
        delays.push(delay);
    }
    let nominal = [250u64, 500, 1000, 2000, 4000, 4000];
    for (d, n) in delays.iter().zip(nominal) {
        let n = Duration::from_millis(n);
        assert!(*d >= n / 2 && *d <= n, "{d:?} for nominal {n:?}");
    }
    assert!(
        delays
            .iter()
            .zip(nominal)
            .any(|(d, n)| *d != Duration::from_millis(n)),
        "jittered: {delays:?}"
    );
    // The same seed gives the same spacing.
    let mut again = World::new(180);
    again.step();
    let second: Vec<Duration> = (0..6).map(|_| again.fail_then_retry().1).collect();
    assert_eq!(delays, second);
    // A success resets the backoff.
    w.handle(Event::Registered {
        ports: ports(true),
        assignment: assignment([10, 0, 0, 2]),
    });
    w.poll();
    w.handle(Event::TunnelReady);
    let at = w.now + Duration::from_secs(600);
    w.now = at;
    w.heard();
    assert_eq!(w.poll(), Action::Register(Why::Interval));
    w.backoff_started_over();
}

#[test]
fn a_healthy_tunnel_only_registers_on_the_interval() {
    let mut w = World::new(10);
    w.register([10, 0, 0, 2], ports(true));
    let registered = w.now;
    while w.now - registered < Duration::from_secs(599) {
        w.heard();
        assert_eq!(w.step(), None, "at {:.1} s", w.secs());
    }
    let action = w.run_until_action(Duration::from_secs(2));
    assert_eq!(action, Some(Action::Register(Why::Interval)));
    assert_eq!(w.now - registered, Duration::from_secs(600));
}

#[test]
fn a_dead_tunnel_restarts_the_session_then_registers_after_the_timeout() {
    // Keep-alive 2 s: the session restarts after 11 s of silence; the effective timeout is max(10, 11) = 11 s.
    let mut w = World::new(10);
    w.register([10, 0, 0, 2], ports(true));
    for _ in 0..10 {
        assert_eq!(w.step(), None);
        w.heard();
    }
    let silent_from = w.now;
    let mut restarts = Vec::new();
    let why = loop {
        match w.run_until_action(Duration::from_secs(60)) {
            Some(Action::RestartSession { silent_for }) => {
                restarts.push((w.now - silent_from, silent_for))
            }
            Some(Action::Register(why)) => break why,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        restarts,
        vec![(Duration::from_secs(11), Duration::from_secs(11))]
    );
    assert_eq!(
        why,
        Why::DeadTunnel {
            since: Duration::from_secs(11),
            timeout: Duration::from_secs(11)
        }
    );
    assert_eq!(w.now - silent_from, Duration::from_secs(11));
    // Registered again with the same address: the peer is updated in place and the liveness clock keeps
    // running, so while the path stays broken the next registration comes a sixth of the timeout later.
    w.registered(Action::UpdateTunnel);
    let registered = w.now;
    let next = loop {
        match w.run_until_action(Duration::from_secs(60)) {
            Some(Action::RestartSession { .. }) => {}
            other => break other,
        }
    };
    assert!(matches!(
        next,
        Some(Action::Register(Why::DeadTunnel { .. }))
    ));
    let gap = w.now - registered;
    assert!(
        gap >= Duration::from_secs(11) / 6 && gap <= Duration::from_secs(11) / 6 + TICK,
        "{gap:?}"
    );
}

#[test]
fn a_handshake_counts_as_life() {
    let mut w = World::new(10);
    w.register([10, 0, 0, 2], ports(true));
    // Nothing authenticated arrives, but handshakes complete every 5 s: sessions restart, yet the tunnel is
    // alive and nothing registers before the interval.
    let mut registered = false;
    while w.secs() < 120.0 {
        if (w.now - w.t0).as_millis() % 5000 == 0 {
            let wall = w.wall();
            w.handle(Event::PeerSeen(PeerActivity {
                last_handshake: Some(wall),
                ..PeerActivity::default()
            }));
        }
        if let Some(Action::Register(_)) = w.step() {
            registered = true;
        }
    }
    assert!(!registered);
}

#[test]
fn a_port_state_change_registers_at_once_and_only_a_real_change() {
    let mut w = World::new(180);
    w.register([10, 0, 0, 2], ports(true));
    w.heard();
    assert_eq!(w.step(), None);
    // Discovery signalled, but the state is the one reported.
    w.handle(Event::PortStates(ports(true)));
    w.heard();
    assert_eq!(w.step(), None);
    w.handle(Event::PortStates(ports(false)));
    assert_eq!(w.poll(), Action::Register(Why::ReportPorts));
    w.handle(Event::Registered {
        ports: ports(false),
        assignment: assignment([10, 0, 0, 2]),
    });
    assert_eq!(w.poll(), Action::UpdateTunnel(assignment([10, 0, 0, 2])));
    w.handle(Event::TunnelReady);
    w.heard();
    assert_eq!(w.step(), None);
    // A forwarder (re)started on the tunnel address reports too.
    w.handle(Event::ForwarderStarted);
    assert_eq!(w.poll(), Action::Register(Why::ReportPorts));
}

#[test]
fn a_report_waits_for_the_backoff() {
    let mut w = World::new(180);
    w.register([10, 0, 0, 2], ports(true));
    w.handle(Event::PortStates(ports(false)));
    assert_eq!(w.poll(), Action::Register(Why::ReportPorts));
    w.heard();
    w.retried_after_backoff(Event::RegistrationFailed, Why::ReportPorts);
}

#[test]
fn a_new_address_rebuilds_and_a_failed_set_up_is_retried() {
    let mut w = World::new(180);
    w.register_then_reach_the_interval();
    w.handle(Event::Registered {
        ports: ports(true),
        assignment: assignment([10, 0, 0, 3]),
    });
    assert_eq!(w.poll(), Action::StartTunnel(assignment([10, 0, 0, 3])));
    w.retried_after_backoff(Event::TunnelFailed, Why::NoTunnel);
}

#[test]
fn a_gateway_refused_by_a_reloaded_policy_stops_the_tunnel_and_retries() {
    // The policy file changed and the gateway of the tunnel no longer satisfies it: the tunnel stops at once,
    // a registration follows at once, and its handshake fails under the new policy, a failed registration
    // like any other. The tunnel stays down (no set-up is asked for), the retries back off, and once a gateway
    // is accepted again the tunnel is built afresh and the backoff starts over.
    let mut w = World::new(180);
    w.register([10, 0, 0, 2], ports(true));
    for _ in 0..4 {
        w.heard();
        assert_eq!(w.step(), None);
    }
    w.handle(Event::GatewayRevoked {
        why: "gateway: measurement not allowed".into(),
    });
    assert!(!w.sup.tunnel_up(), "the tunnel is down at once");
    assert_eq!(w.poll(), Action::StopTunnel);
    assert_eq!(w.poll(), Action::Register(Why::NoTunnel));
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let at = w.now;
        w.handle(Event::RegistrationFailed);
        assert!(!w.sup.tunnel_up(), "the tunnel stays down");
        loop {
            // Whatever the peer table still says, a stopped tunnel is not supervised.
            w.heard();
            match w.step() {
                None => continue,
                Some(Action::Register(Why::NoTunnel)) => break,
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
        gaps.push(w.now - at);
    }
    for pair in gaps.windows(2) {
        assert!(pair[1] * 4 >= pair[0], "backing off: {gaps:?}");
    }
    assert!(gaps[3] > Duration::from_millis(250), "{gaps:?}");
    w.registered(Action::StartTunnel);
    assert!(w.sup.tunnel_up());
    w.heard();
    assert_eq!(w.step(), None);
    // The backoff started over.
    w.handle(Event::GatewayRevoked {
        why: "gateway: measurement not allowed".into(),
    });
    assert_eq!(w.poll(), Action::StopTunnel);
    assert_eq!(w.poll(), Action::Register(Why::NoTunnel));
    w.backoff_started_over();
}

#[test]
fn a_revocation_waits_for_a_running_backoff_and_without_a_tunnel_changes_nothing() {
    // Registrations were already failing (the tunnel kept running): the revocation stops the tunnel at once,
    // but the next attempt still waits for the backoff.
    let mut w = World::new(180);
    w.register_then_reach_the_interval();
    w.handle(Event::RegistrationFailed);
    w.handle(Event::RegistrationFailed);
    let failed_at = w.now;
    w.handle(Event::GatewayRevoked {
        why: "gateway: measurement not allowed".into(),
    });
    assert_eq!(w.poll(), Action::StopTunnel);
    assert!(matches!(w.poll(), Action::Sleep { .. }));
    let next = w.run_until_action(Duration::from_secs(10));
    assert_eq!(next, Some(Action::Register(Why::NoTunnel)));
    assert!(
        w.now - failed_at >= Duration::from_millis(250),
        "{:?}",
        w.now - failed_at
    );
    // No tunnel: a revocation has nothing to stop.
    w.handle(Event::RegistrationFailed);
    w.handle(Event::GatewayRevoked {
        why: "gateway: measurement not allowed".into(),
    });
    assert!(matches!(w.poll(), Action::Sleep { .. }));
}

#[test]
fn a_revocation_during_a_set_up_drops_it() {
    let mut w = World::new(180);
    assert_eq!(w.poll(), Action::Register(Why::NoTunnel));
    w.handle(Event::Registered {
        ports: ports(true),
        assignment: assignment([10, 0, 0, 2]),
    });
    assert_eq!(w.poll(), Action::StartTunnel(assignment([10, 0, 0, 2])));
    w.handle(Event::GatewayRevoked {
        why: "gateway: measurement not allowed".into(),
    });
    assert_eq!(w.poll(), Action::StopTunnel);
    // The set-up's late answer finds nothing being built.
    w.handle(Event::TunnelReady);
    assert!(!w.sup.tunnel_up());
    assert_eq!(w.poll(), Action::Register(Why::NoTunnel));
}

/// A gateway policy accepting simulated SNP gateways with `measurement` in every byte.
fn policy_allowing(measurement: u8) -> GatewayPolicy {
    GatewayPolicy::from_toml(&test_support::configs::gateway_policy(&format!(
        "{measurement:02x}"
    )))
    .expect("a valid policy")
}

#[test]
fn a_reload_that_still_accepts_the_gateway_changes_nothing_and_one_that_refuses_it_revokes() {
    let gateway = test_support::claims::sim_snp(0xaa);
    let mut w = World::new(180);
    w.register([10, 0, 0, 2], ports(true));
    let registered = w.now;
    // Reloaded, still accepting (the same policy, or another that also allows the gateway): no event, the
    // tunnel runs on and nothing registers before the interval.
    let mut also = policy_allowing(0xbb);
    also.profile.extend(policy_allowing(0xaa).profile);
    for policy in [policy_allowing(0xaa), also] {
        assert_eq!(Event::recheck(&policy, &gateway), None);
    }
    while w.now - registered < Duration::from_secs(599) {
        w.heard();
        assert_eq!(w.step(), None, "at {:.1} s", w.secs());
        assert!(w.sup.tunnel_up());
    }
    // Reloaded, refusing: the event names the failed check, and the tunnel stops at once.
    let revoked = Event::recheck(&policy_allowing(0xbb), &gateway).expect("refused");
    let Event::GatewayRevoked { why } = &revoked else {
        panic!("{revoked:?}")
    };
    assert!(
        why.contains("measurement") && why.contains(&"aa".repeat(48)),
        "{why}"
    );
    w.handle(revoked);
    assert_eq!(w.poll(), Action::StopTunnel);
    assert!(!w.sup.tunnel_up());
    assert_eq!(w.poll(), Action::Register(Why::NoTunnel));
}

#[test]
fn a_renewed_certificate_is_presented_at_once_and_only_once() {
    let mut w = World::new(180);
    w.register([10, 0, 0, 2], ports(true));
    w.now += Duration::from_secs(30);
    w.heard();
    assert_eq!(w.step(), None, "nothing due before the renewal");
    w.handle(Event::CertificateRenewed);
    assert_eq!(w.poll(), Action::Register(Why::Renewed));
    w.registered(Action::UpdateTunnel);
    // Presented: the next registration is the interval's.
    let registered = w.now;
    let next = loop {
        w.heard();
        if let Some(action) = w.step() {
            break action;
        }
    };
    assert_eq!(next, Action::Register(Why::Interval));
    assert_eq!(w.now - registered, Duration::from_secs(600));

    // A failed registration after a renewal retries after the backoff, still to present the new certificate.
    w.handle(Event::RegistrationFailed);
    w.handle(Event::CertificateRenewed);
    let failed_at = w.now;
    w.heard();
    assert!(matches!(w.poll(), Action::Sleep { .. }), "the backoff runs");
    let next = w.run_until_action(Duration::from_secs(10));
    assert_eq!(next, Some(Action::Register(Why::Renewed)));
    assert!(w.now - failed_at <= Duration::from_millis(250));
}
