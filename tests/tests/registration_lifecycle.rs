//! The registration lifecycle in the lab, with real gateway and agent processes and short, configured timings: an
//! agent whose tunnel stops working registers again within its handshake timeout; while the gateway is down the
//! agent's attempts back off exponentially with jitter and it keeps serving; instances that stop registering
//! expire in the running gateway and free their addresses; the app policy and the agents' gateway policy are
//! reloaded when their files change; both sides renew their RA-TLS certificates without a restart.

mod registration;

use std::net::Ipv4Addr;
use std::time::Duration;

use cvm_agent::client::{register_once, AttemptError};
use protocol::control::{ErrorCode, InstanceId, RegisterRequest};
use registration::*;
use test_support::firewall::NftDrop;
use test_support::{wait_for, Host};

/// A `Debug`-formatted duration as tracing logs it (`812.5ms`, `1.25s`, `4s`, `900µs`), in seconds.
fn debug_secs(text: &str) -> Option<f64> {
    for (unit, scale) in [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)] {
        if let Some(v) = text.strip_suffix(unit) {
            return v.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// The value of `key=` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

/// A registration request for a fresh instance from the test client.
fn fresh_request() -> RegisterRequest {
    register_request(&InstanceId::random(), random_key())
}

/// Agent `a1` (handshake timeout 10 s, retries from 250 ms up to 4 s) in `cvm1`: a healthy idle tunnel never
/// triggers a re-registration; with the tunnel's UDP blocked (the control port open) it registers again once the
/// tunnel has been silent for the timeout; with the gateway killed its attempts are spaced as the backoff says
/// while it keeps serving locally; when the gateway returns it registers and is reachable again.
#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn a_dead_tunnel_and_a_gateway_outage_are_recovered_from() {
    let (lab, world) = World::in_lab("reg-outage");
    let gateway_options = rare_reregistration();
    let agent_options = AgentConfig {
        handshake_timeout_secs: Some(10),
        retry_initial_ms: 250,
        retry_max_ms: 4000,
        ..AgentConfig::default()
    };
    // The gateway's keep-alive is 2 s, so the agent's effective timeout is max(10, 3 * 2 + 5) = 11 s.
    const TIMEOUT: f64 = 11.0;
    let mut stack = world.start_stack(&lab, &gateway_options, &agent_options, Host::Cvm1, "a1");
    let addr = stack.addr.clone();

    // Healthy and idle for longer than the timeout: keep-alives keep the tunnel alive, nothing re-registers. The
    // quiet spell is what is tested, so the test sleeps through it.
    let healthy_from = unix_now();
    std::thread::sleep(Duration::from_secs_f64(TIMEOUT + 2.0));
    for quiet in [
        "no tunnel handshake within the timeout",
        "restarting the WireGuard session",
    ] {
        assert!(
            !world.logged_since("a1", quiet, healthy_from),
            "a healthy tunnel logged {quiet:?}"
        );
    }

    // Block the tunnel's UDP in cvm1 (the control port stays open): the agent registers again once the tunnel
    // has been silent for the timeout (the last keep-alive arrived up to 2 s before the block).
    let last_seen_before = world.registry()[0].last_seen;
    let blocked_at = unix_now();
    let block = NftDrop::udp_port(Host::Cvm1, WG_PORT).unwrap();
    let (stale_at, _) = world.wait_line(
        "a1",
        "no tunnel handshake within the timeout",
        blocked_at,
        40,
    );
    let detected = stale_at - blocked_at;
    assert!(
        (TIMEOUT - 3.0..=TIMEOUT + 5.0).contains(&detected),
        "the dead tunnel was noticed {detected:.1} s after the block; the timeout is {TIMEOUT} s"
    );
    let (registered_at, line) = world.wait_line("a1", ": registered", stale_at - 0.001, 15);
    assert_eq!(field(&line, "address"), Some(addr.as_str()), "{line}");
    let record = world.registry().remove(0);
    assert!(
        record.last_seen > last_seen_before,
        "the gateway recorded the new registration ({} -> {})",
        last_seen_before,
        record.last_seen
    );
    eprintln!(
        "tunnel UDP blocked: silence noticed after {detected:.1} s, registered again after {:.1} s",
        registered_at - blocked_at
    );
    // The session was restarted too (silence of three keep-alive intervals), and the tunnel comes back once the
    // path does.
    assert!(world.logged_since("a1", "restarting the WireGuard session", blocked_at));
    drop(block);
    let took = wait_reachable(&lab, &addr, "hello-from-a1", 30).unwrap();
    eprintln!("tunnel reachable again {took:?} after the block was lifted");

    // The gateway goes away (kill -9): after the timeout the agent tries to register, and each failure waits
    // longer: nominal 250 ms, 500 ms, 1 s, 2 s, 4 s, 4 s, each a random value between half and all of it.
    let killed_at = unix_now();
    stack.gateway.kill();
    const FAILURES: usize = 6;
    let failures = wait_for(
        Duration::from_secs(60),
        "six failed registration attempts",
        || {
            let f: Vec<(f64, String)> = world
                .lines_with("a1", "no gateway accepted the registration")
                .into_iter()
                .filter(|(t, _)| *t > killed_at)
                .collect();
            Ok((f.len() >= FAILURES).then_some(f))
        },
    )
    .unwrap();
    let attempts: Vec<f64> = world
        .lines_with("a1", "registering: connecting")
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t > killed_at)
        .collect();
    let mut delays = Vec::new();
    for (i, (failed_at, line)) in failures.iter().take(FAILURES - 1).enumerate() {
        let nominal = (0.25 * 2f64.powi(i as i32)).min(4.0);
        let retry_in = field(line, "retry_in")
            .and_then(debug_secs)
            .unwrap_or_else(|| panic!("no retry_in in {line}"));
        assert!(
            retry_in >= nominal / 2.0 - 0.001 && retry_in <= nominal + 0.001,
            "failure {i}: retry in {retry_in} s, nominal {nominal} s"
        );
        // The next attempt starts when the delay is over, not before and not much later.
        let next = attempts
            .iter()
            .find(|t| *t > failed_at)
            .unwrap_or_else(|| panic!("no attempt after failure {i}"));
        let gap = next - failed_at;
        assert!(
            gap >= retry_in - 0.02 && gap <= retry_in + 0.7,
            "failure {i}: next attempt after {gap:.3} s, the delay was {retry_in:.3} s"
        );
        delays.push((nominal, retry_in, gap));
    }
    assert!(
        delays.iter().any(|(n, r, _)| (n - r).abs() > 0.001),
        "the delays are jittered, not exactly nominal: {delays:?}"
    );
    eprintln!("attempt spacing while the gateway is down (nominal, drawn, observed): {delays:?}");
    // The agent keeps running and keeps serving on its tunnel address (locally: the tunnel is down).
    assert!(stack.agent.is_running(), "the agent exited");
    assert_eq!(
        fetch(&lab, Host::Cvm1, &addr).unwrap(),
        "hello-from-a1",
        "the forwarder keeps answering while the gateway is down"
    );

    // The gateway returns with its registry: the tunnel works again with the same address, through the peer the
    // gateway restored (and a registration if the next retry comes first), and the retries stop.
    let restarted_at = unix_now();
    stack.gateway = world.start_gateway(&lab, &gateway_options).unwrap();
    let took = wait_reachable(&lab, &addr, "hello-from-a1", 30).unwrap();
    let back = unix_now();
    // Five quiet seconds with the tunnel back: that no retry comes is what is checked, so the test sleeps.
    std::thread::sleep(Duration::from_secs(5));
    let late_failures: Vec<_> = world
        .lines_with("a1", "no gateway accepted the registration")
        .into_iter()
        .filter(|(t, _)| *t > back)
        .collect();
    assert!(
        late_failures.is_empty(),
        "the agent still retries after the tunnel came back: {late_failures:?}"
    );
    eprintln!(
        "gateway back: tunnel reachable {took:?} after the restart, {} registration(s) since",
        world
            .lines_with("a1", ": registered")
            .iter()
            .filter(|(t, _)| *t > restarted_at)
            .count()
    );
}

/// One gateway (instances expire after 25 s of silence, re-registration every 10 s, certificates valid for
/// 60 s, a /29 tunnel network of five instance addresses) and two agents: the killed one expires, its peer is
/// removed and its address reused, while the live one is kept; changed app and gateway policies take effect
/// without restarts; both sides renew their certificates and keep registering after the first ones expired.
#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn expiry_policy_reload_and_certificate_renewal() {
    let (lab, world) = World::in_lab("reg-lifecycle");
    let gateway_options = GatewayConfig {
        network: Some("10.0.0.0/29".into()),
        reregister_secs: 10,
        expire_after_secs: Some(25),
        certificate_validity_secs: Some(60),
        ..GatewayConfig::default()
    };
    let agent_options = AgentConfig {
        certificate_validity_secs: Some(60),
        ..AgentConfig::default()
    };
    let started = unix_now();
    let mut stack = world.start_stack(&lab, &gateway_options, &agent_options, Host::Cvm1, "live");
    let live_addr = stack.addr.clone();
    let _logs = world.logs_on_failure(&["doomed"]);
    let mut doomed = world
        .start_agent(&lab, Host::Cvm2, "doomed", &agent_options)
        .unwrap();
    let doomed_addr = tunnel_address(&lab, Host::Cvm2, "doomed").unwrap();
    let first_cert = wait_for(Duration::from_secs(10), "the control certificate", || {
        control_certificate(&lab).map(Some)
    })
    .unwrap();

    // Expiry: kill -9 one agent; the gateway removes it within the expiry time plus a sweep (a quarter of it).
    doomed.kill();
    let doomed_record = world
        .registry()
        .into_iter()
        .find(|r| r.tunnel_address.to_string() == doomed_addr)
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the killed agent to expire",
        || {
            Ok((!world
                .registry()
                .iter()
                .any(|r| r.instance_id == doomed_record.instance_id))
            .then_some(()))
        },
    )
    .unwrap();
    let silent_for = unix_now() - doomed_record.last_seen as f64;
    assert!(
        (25.0..=40.0).contains(&silent_for),
        "expired {silent_for:.1} s after its last registration; the expiry time is 25 s"
    );
    let expired = world.lines_with("gateway", "instance expired");
    assert!(
        expired.iter().any(
            |(_, l)| l.contains(doomed_record.instance_id.as_str()) && l.contains(&doomed_addr)
        ),
        "{expired:?}"
    );
    let removed = world.lines_with("gateway", "peer removed");
    assert!(
        removed
            .iter()
            .any(|(_, l)| l.contains(&doomed_record.public_key.to_string())),
        "the expired instance's peer is removed from the tunnel: {removed:?}"
    );
    // The live agent is kept and still reachable.
    let registry = world.registry();
    assert_eq!(registry.len(), 1, "{registry:?}");
    assert_eq!(registry[0].tunnel_address.to_string(), live_addr);
    wait_reachable(&lab, &live_addr, "hello-from-live", 10).unwrap();

    // The freed address is reusable: the four free addresses of the /29 go to new instances (one of them the
    // expired instance's), and a fifth is refused with address_pool_exhausted.
    let tls = client_tls(&world);
    let url = control_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let register = |req: &RegisterRequest| {
        rt.block_on(register_once(
            &url,
            tls.clone(),
            req,
            Duration::from_secs(10),
            |_| {},
        ))
    };
    let mut handed_out: Vec<Ipv4Addr> = (0..4)
        .map(|i| {
            register(&fresh_request())
                .unwrap_or_else(|e| panic!("instance {i}: {e}"))
                .tunnel_address
        })
        .collect();
    handed_out.sort();
    assert!(
        handed_out.iter().any(|a| a.to_string() == doomed_addr),
        "the expired instance's address {doomed_addr} is handed out again: {handed_out:?}"
    );
    match register(&fresh_request()) {
        Err(AttemptError::Refused {
            status: 503, body, ..
        }) => assert_eq!(body.error, ErrorCode::AddressPoolExhausted, "{body:?}"),
        other => panic!("a sixth instance in a /29: {other:?}"),
    }

    // App policy reload: disallow the agents' measurement. The live instance is removed at once (revocation), a new
    // registration is refused with the typed error naming app and measurement, and so is the live agent's next
    // one; allowed again, it is accepted, with the address the registry then hands out.
    let live_id = world.instance_at(&live_addr).unwrap().instance_id;
    let changed = unix_now();
    world.publish_app_policy(&lab, &[BAD]);
    world.wait_line("gateway", "app owner's policy installed", changed, 10);
    // Every instance of the app goes, the live agent's among them.
    let revoked = wait_for(
        Duration::from_secs(5),
        "the live instance's removal",
        || {
            Ok(world
                .lines_with("gateway", "instance removed")
                .into_iter()
                .find(|(t, l)| *t >= changed && l.contains(live_id.as_str())))
        },
    )
    .unwrap();
    assert!(revoked.1.contains("reason=\"policy\""), "{}", revoked.1);
    match register(&fresh_request()) {
        Err(AttemptError::Refused {
            status: 403, body, ..
        }) => {
            assert_eq!(body.error, ErrorCode::PolicyRefused, "{body:?}");
            assert!(
                body.message.contains(APP) && body.message.contains(&measurement(GOOD)),
                "{}",
                body.message
            );
        }
        other => panic!("registration under the stricter policy: {other:?}"),
    }
    world.wait_line("live", "policy_refused", changed, 25);
    let allowed = unix_now();
    world.publish_app_policy(&lab, &[GOOD]);
    world.wait_line("gateway", "app owner's policy installed", allowed, 10);
    world.wait_line("live", ": registered", allowed, 15);
    let live_addr = world
        .instance(live_id.as_str())
        .expect("registered again")
        .tunnel_address
        .to_string();
    wait_reachable(&lab, &live_addr, "hello-from-live", 10).unwrap();

    // Gateway policy reload in the agent: a policy this gateway does not satisfy makes the next registration stop
    // at the TLS handshake; the previous policy restored, registrations succeed again.
    let changed = unix_now();
    world.write_gateway_policy(BAD);
    let (reloaded, _) = world.wait_line("live", "gateway policy reloaded", changed, 5);
    world.wait_line("live", "TLS handshake failed", reloaded, 25);
    assert!(
        world.logged_since("live", "measurement", reloaded),
        "the refusal names the failed check\n{}",
        world.read_log("live")
    );
    assert!(
        !world.logged_since("live", ": registered", reloaded),
        "no registration while the gateway is refused"
    );
    let restored = unix_now();
    world.write_gateway_policy(GOOD);
    world.wait_line("live", ": registered", restored, 15);

    // Certificate renewal: the gateway renews when a quarter of its 60 s remains, without a restart, and serves
    // the new certificate.
    world.wait_line("gateway", "RA-TLS certificate renewed", started, 60);
    let second_cert = control_certificate(&lab).unwrap();
    let line_of = |cert: &str, key: &str| {
        cert.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(
        line_of(&first_cert, "serial="),
        line_of(&second_cert, "serial="),
        "{first_cert}\n{second_cert}"
    );
    assert_ne!(
        line_of(&first_cert, "notAfter="),
        line_of(&second_cert, "notAfter="),
        "{first_cert}\n{second_cert}"
    );
    assert!(stack.gateway.is_running(), "the gateway was not restarted");
    assert_eq!(
        world.lines_with("gateway", "step 1/7").len(),
        1,
        "the gateway started once"
    );
    // The agent renews its own too.
    world.wait_line("live", "RA-TLS certificate renewed", started, 60);
    // Once both first certificates have expired (60 s after they were issued), registering still works: each
    // side presents and accepts the renewed ones.
    let issued = |name: &str, step: &str| world.lines_with(name, step).first().map(|(t, _)| *t);
    let both_expired = issued("live", "boot 3/5")
        .unwrap()
        .max(issued("gateway", "step 3/7").unwrap())
        + 61.0;
    // Waiting out the certificates' validity is what is tested: the test sleeps until then.
    std::thread::sleep(Duration::from_secs_f64(
        (both_expired - unix_now()).max(0.0),
    ));
    world.wait_line("live", ": registered", both_expired, 20);
    wait_reachable(&lab, &live_addr, "hello-from-live", 10).unwrap();
    eprintln!(
        "lifecycle test done {:.0} s after the gateway started",
        unix_now() - started
    );
}
