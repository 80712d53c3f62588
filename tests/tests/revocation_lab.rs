//! Revocation in the running gateway, performed as an operator or app owner would: an instance whose measurement
//! the app policy stops allowing leaves the tunnel within seconds (not at its next registration, minutes or hours
//! later), and an instance whose evidence ends without renewal is removed although it is not yet expired.
#![allow(
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod registration;

use registration::*;
use test_support::Host;

/// With re-registration every 10 minutes and expiry after an hour, the only way out of rotation within the test is
/// revocation: the app policy stops allowing the agent's measurement, and within seconds the gateway removes the
/// instance (log line naming it and the reason), its registry row, and its WireGuard peer, so the gateway's host
/// no longer reaches the instance's forwarded port through the tunnel.
#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn a_policy_that_stops_allowing_the_measurement_takes_the_instance_out_within_seconds() {
    let (lab, world) = World::in_lab("revoke-policy");
    let stack = world.start_quiet_stack(&lab, "a1");
    let addr = &stack.addr;
    let record = world.instance_at(addr).expect("the agent is registered");
    assert!(record.claims.is_some(), "the verified claims are stored");

    let changed = unix_now();
    world.publish_app_policy(&lab, &[BAD]);
    let (removed_at, line) = world.wait_line("gateway", "instance removed", changed, 10);
    assert!(
        line.contains(record.instance_id.as_str()) && line.contains("reason=\"policy\""),
        "{line}"
    );
    assert!(
        removed_at - changed < 6.0,
        "removed {:.1} s after the policy changed",
        removed_at - changed
    );
    assert!(world.instance(record.instance_id.as_str()).is_none());
    let peer_removed = world.lines_with("gateway", "peer removed");
    assert!(
        peer_removed
            .iter()
            .any(|(t, l)| *t >= changed && l.contains(&record.public_key.to_string())),
        "the instance's WireGuard peer leaves the tunnel: {peer_removed:?}"
    );
    let outcome = connect_outcome(&lab, Host::Gateway, addr, FORWARDED).unwrap();
    assert_ne!(outcome, "connected", "{addr}:{FORWARDED} still reachable");
}

/// An agent that stops (SIGSTOP: alive to the kernel, silent to the gateway) cannot renew its 60 s RA-TLS
/// certificate. The gateway's expiry is an hour away, yet it removes the instance once the evidence it registered
/// with has ended, within a maintenance tick (2 s) of that end.
#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn evidence_that_ends_without_renewal_removes_the_instance_before_its_expiry() {
    let (lab, world) = World::in_lab("revoke-evidence");
    let gateway_options = GatewayConfig {
        expire_after_secs: Some(3600),
        ..rare_reregistration()
    };
    let agent_options = AgentConfig {
        certificate_validity_secs: Some(60),
        ..AgentConfig::default()
    };
    let stack = world.start_stack(&lab, &gateway_options, &agent_options, Host::Cvm1, "a1");
    let record = world
        .instance_at(&stack.addr)
        .expect("the agent is registered");
    let now = unix_now();
    assert!(
        (record.valid_until as f64) > now && (record.valid_until as f64) <= now + 61.0,
        "the stored end is the agent's certificate's: {} (now {now:.0})",
        record.valid_until
    );
    let pid = nix_pid(stack.agent.id());
    signal(pid, libc::SIGSTOP);
    let _resume = Resume(pid);

    let (removed_at, line) = world.wait_line("gateway", "instance removed", now, 100);
    assert!(
        line.contains(record.instance_id.as_str()) && line.contains("reason=\"evidence_expired\""),
        "{line}"
    );
    let end = record.valid_until as f64;
    assert!(
        removed_at >= end && removed_at <= end + 4.0,
        "removed at {removed_at:.0}, the evidence ended at {end:.0}"
    );
    assert!(world.instance(record.instance_id.as_str()).is_none());
}

fn nix_pid(id: u32) -> libc::pid_t {
    libc::pid_t::try_from(id).expect("a process id fits pid_t")
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) with a process id of a child this test started; no memory is shared.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Resumes a stopped process when dropped, so that its guard can stop it (also when the test fails).
struct Resume(libc::pid_t);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: as in `signal`; failure (the process is gone) is harmless here.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
