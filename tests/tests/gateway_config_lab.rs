//! The operator changes the gateway's configuration behind the app owner's back, and an agent that pinned the
//! published configuration refuses the gateway.
//!
//! The gateway binds the digest of its security-relevant settings (trusted roots by fingerprint, listeners, TLS
//! key sources, ...) with its RA-TLS key and logs it at start; `gateway config-digest` prints the same digest for
//! a configuration file, so an owner can pin it in the agents' gateway policy. Here the operator stops the
//! gateway, adds a simulated root of its own to `trusted_sim_roots` (with it, CVMs the operator makes would pass
//! as attested) and starts the same gateway binary again: its measurement, address and WireGuard key are
//! unchanged, only its configuration differs. At its next re-registration the pinned agent refuses the gateway's
//! certificate, naming both digests, and tears its tunnel down; with the published configuration back, it
//! registers again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod registration;

use std::path::Path;
use std::time::Duration;

use registration::*;
use test_support::{binaries, wait_for, Host};

/// The first line of `gateway config-digest --config CONFIG`: the digest.
fn config_digest(config: &Path) -> String {
    let out = std::process::Command::new(binaries::workspace_binary("gateway"))
        .args(["config-digest", "--config"])
        .arg(config)
        .output()
        .expect("running gateway config-digest");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "gateway config-digest failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = stdout.lines().next().unwrap_or_default().to_owned();
    assert_eq!(digest.len(), 64, "a SHA-256 in hex: {stdout}");
    digest
}

#[test]
#[ignore = "needs root and the network-namespace lab"]
fn an_agent_pinning_the_published_configuration_refuses_the_gateway_restarted_trusting_another_root(
) {
    let (lab, world) = World::in_lab("config-digest");
    let _logs = world.logs_on_failure(&["gateway", "c1"]);
    let gateway_config = GatewayConfig {
        reregister_secs: 10,
        ..GatewayConfig::default()
    };
    let server = start_tcp_server(&lab, Host::Cvm1, "hello-from-c1").unwrap();
    let mut gateway = world.start_gateway(&lab, &gateway_config).unwrap();
    let config = world.dir().join("gateway.toml");
    let published = config_digest(&config);
    // The gateway logs the digest it binds, the same one the command computes.
    world.wait_log_with("gateway", "the configuration digest logged", &[&published]);

    // The owner pins the published configuration.
    std::fs::write(
        world.scratch.path("gateway-policy.toml"),
        format!(
            "config_digest = [\"{published}\"]\n{}",
            test_support::configs::gateway_policy(GOOD)
        ),
    )
    .unwrap();
    let agent = AgentConfig {
        retry_initial_ms: 250,
        retry_max_ms: 2000,
        ..AgentConfig::default()
    };
    let mut agent = world.start_agent(&lab, Host::Cvm1, "c1", &agent).unwrap();
    let addr = tunnel_address(&lab, Host::Cvm1, "c1").unwrap();
    wait_reachable(&lab, &addr, "hello-from-c1", 20).unwrap();

    // The operator: another simulated root trusted, the same binary started again.
    let operator_pki = world.scratch.path("operator-pki");
    std::fs::create_dir_all(&operator_pki).unwrap();
    attestation::SimSnpPki::generate_small("the operator's own simulated AMD PKI")
        .unwrap()
        .write_pem(&operator_pki)
        .unwrap();
    let original = std::fs::read_to_string(&config).unwrap();
    let trusted = format!("trusted_sim_roots = [\"{}\"]", world.pki().display());
    assert!(original.contains(&trusted), "{original}");
    let edited = original.replace(
        &trusted,
        &format!(
            "trusted_sim_roots = [\"{}\", \"{}\"]",
            world.pki().display(),
            operator_pki.display()
        ),
    );
    gateway.terminate(Duration::from_secs(10)).unwrap();
    std::fs::write(&config, &edited).unwrap();
    let changed = config_digest(&config);
    assert_ne!(
        changed, published,
        "another trusted root changes the digest"
    );
    let restarted = unix_now();
    gateway = world
        .start(&lab, Host::Gateway, "gateway", "gateway", &config)
        .unwrap();

    // At its next registration the agent refuses the gateway, names both digests, and the tunnel goes.
    let (_, line) = world.wait_line("c1", "gateway revoked", restarted, 30);
    assert!(
        line.contains(&changed) && line.contains(&published),
        "the refusal names the gateway's digest and the pinned one: {line}"
    );
    wait_for(
        Duration::from_secs(10),
        "the agent's TUN device to go away",
        || Ok((!lab.has_interface(Host::Cvm1, "tga-c1")).then_some(())),
    )
    .unwrap();
    assert!(
        fetch(&lab, Host::Gateway, &addr).is_err(),
        "the CVM's port is no longer reachable through the tunnel"
    );
    assert!(
        !world.logged_since("c1", ": registered", restarted),
        "no registration with the reconfigured gateway"
    );
    assert!(agent.is_running(), "the agent keeps running");

    // The published configuration back: the agent registers again and its port is reachable.
    gateway.terminate(Duration::from_secs(10)).unwrap();
    std::fs::write(&config, &original).unwrap();
    let restored = unix_now();
    let _gateway = world
        .start(&lab, Host::Gateway, "gateway", "gateway", &config)
        .unwrap();
    world.wait_line("c1", ": registered", restored, 30);
    let addr_again = tunnel_address(&lab, Host::Cvm1, "c1").unwrap();
    wait_reachable(&lab, &addr_again, "hello-from-c1", 20).unwrap();
    drop(server);
}
