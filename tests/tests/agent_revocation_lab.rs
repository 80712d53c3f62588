//! Revocation in the running agent, performed as the CVM's owner would: the agent's gateway policy file is
//! rewritten so that it no longer accepts the gateway's measurement, and within seconds the agent tears down the
//! tunnel it had set up with that gateway (its TUN device, its WireGuard peer and the port forwarder on the tunnel
//! address go away, so the gateway's host no longer reaches the CVM's port), logs the revocation naming the
//! gateway and the failed check, and does not register with that gateway again; once the policy accepts the
//! gateway again, the tunnel comes back.

mod registration;

use std::time::Duration;

use registration::*;
use test_support::{wait_for, Host, Lab};

/// Whether `addr` answers one ping from the gateway's host (through the tunnel).
fn pings(lab: &Lab, addr: &str) -> bool {
    lab.succeeds(Host::Gateway, &["ping", "-c", "1", "-W", "1", addr])
}

/// With re-registration every 10 minutes, only revocation can take the tunnel down within the test: the agent's
/// gateway policy stops accepting the gateway's measurement, and within seconds the tunnel stops carrying
/// traffic; the agent's attempts to register again stop at the TLS handshake and none succeeds.
#[test]
#[ignore = "needs root and the network-namespace lab"]
fn a_gateway_policy_that_stops_accepting_the_gateway_tears_the_tunnel_down_within_seconds() {
    let (lab, world) = World::in_lab("agent-revoke");
    let agent_options = AgentConfig {
        retry_initial_ms: 250,
        retry_max_ms: 2000,
        ..AgentConfig::default()
    };
    let mut stack = world.start_stack(
        &lab,
        &rare_reregistration(),
        &agent_options,
        Host::Cvm1,
        "a1",
    );
    let addr = stack.addr.clone();
    assert!(pings(&lab, &addr), "the tunnel carries ping");
    let record = world.instance_at(&addr).expect("the agent is registered");

    let changed = unix_now();
    world.write_gateway_policy(BAD);
    let (reloaded, _) = world.wait_line("a1", "gateway policy reloaded", changed, 5);

    // The tunnel no longer carries traffic: its TUN device is gone, nothing answers through it.
    wait_for(
        Duration::from_secs(5),
        "the agent's TUN device to go away",
        || Ok((!lab.has_interface(Host::Cvm1, "tga-a1")).then_some(())),
    )
    .unwrap();
    let down_after = unix_now() - changed;
    assert!(
        down_after < 6.0,
        "the tunnel went down {down_after:.1} s after the policy changed"
    );
    assert!(
        fetch(&lab, Host::Gateway, &addr).is_err(),
        "the forwarded port is no longer reachable through the tunnel"
    );
    assert!(!pings(&lab, &addr), "the tunnel no longer carries ping");

    // The agent says why, at warn, naming the gateway and the failed check.
    let (revoked_at, line) = world.wait_line("a1", "gateway revoked", changed, 5);
    assert!(line.contains("WARN"), "logged as a warning: {line}");
    assert!(
        line.contains(&format!("{}", control_url())) && line.contains("measurement"),
        "the revocation names the gateway and the failed check: {line}"
    );
    assert!(
        revoked_at - reloaded < 1.0,
        "revoked {:.1} s after the reload",
        revoked_at - reloaded
    );
    world.wait_line(
        "a1",
        "tunnel and port forwarder stopped",
        revoked_at - 0.001,
        5,
    );

    // The agent keeps trying, and each attempt stops at the handshake: it does not register with the refused
    // gateway. A few seconds of attempts is what is checked, so the test waits them out.
    let attempts = wait_for(
        Duration::from_secs(15),
        "three refused registration attempts",
        || {
            let refused: Vec<_> = world
                .lines_with("a1", "TLS handshake failed")
                .into_iter()
                .filter(|(t, _)| *t > revoked_at)
                .collect();
            Ok((refused.len() >= 3).then_some(refused.len()))
        },
    )
    .unwrap();
    assert!(
        !world.logged_since("a1", ": registered", changed),
        "no registration while the gateway is refused"
    );
    assert!(!lab.has_interface(Host::Cvm1, "tga-a1"), "no tunnel again");
    let now = world
        .instance_at(&addr)
        .expect("still in the gateway's registry");
    assert_eq!(
        now.last_seen, record.last_seen,
        "the gateway saw no registration from the agent"
    );
    assert!(fetch(&lab, Host::Gateway, &addr).is_err());
    assert!(stack.agent.is_running(), "the agent keeps running");
    eprintln!(
        "revoked {:.2} s after the policy changed, tunnel down after {down_after:.1} s, {attempts} refused attempts",
        revoked_at - changed
    );

    // The policy accepts the gateway again: the agent registers and the tunnel carries traffic again.
    let restored = unix_now();
    world.write_gateway_policy(GOOD);
    world.wait_line("a1", ": registered", restored, 15);
    let addr_again = tunnel_address(&lab, Host::Cvm1, "a1").unwrap();
    assert_eq!(addr_again, addr, "the same instance gets the same address");
    wait_reachable(&lab, &addr, "hello-from-a1", 20).unwrap();
}
