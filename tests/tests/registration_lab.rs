//! Registration end to end in the lab: real gateway and agent processes in network namespaces, simulated SEV-SNP
//! and TDX evidence, mutual RA-TLS, the WireGuard tunnel, and plain TCP through it.

mod registration;

use std::time::{Duration, Instant};

use protocol::control::TargetState;
use registration::*;
use test_support::{wait_for, Host};

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn agents_register_reach_and_recover() {
    let (lab, world) = World::in_lab("reg-recover");
    // The servers listen on 127.0.0.1:7000 only: the tunnel address reaches them through the agents' forwarders.
    let _s1 = start_tcp_server(&lab, Host::Cvm1, "hello-from-cvm1").unwrap();
    let _s2 = start_tcp_server(&lab, Host::Cvm2, "hello-from-cvm2").unwrap();
    let mut gw = world.default_gateway(&lab);
    let _a1 = world.default_agent(&lab, Host::Cvm1, "a1");
    let mut a2 = world.default_agent(&lab, Host::Cvm2, "a2");

    let _logs = world.logs_on_failure(&["gateway", "a1", "a2"]);
    let addr1 = tunnel_address(&lab, Host::Cvm1, "a1").unwrap();
    let addr2 = tunnel_address(&lab, Host::Cvm2, "a2").unwrap();
    assert_ne!(addr1, addr2);
    for a in [&addr1, &addr2] {
        assert!(a.starts_with("10.") && a != "10.0.0.1", "{a}");
    }
    wait_reachable(&lab, &addr1, "hello-from-cvm1", 20).unwrap();
    wait_reachable(&lab, &addr2, "hello-from-cvm2", 20).unwrap();
    // Only declared ports are served on the tunnel address: 7001 is refused at once (RST), not left hanging.
    let started = Instant::now();
    assert_eq!(
        connect_outcome(&lab, Host::Gateway, &addr1, 7001).unwrap(),
        "ConnectionRefusedError"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Each agent reports port 7000's target as up once its forwarder runs.
    for a in [&addr1, &addr2] {
        wait_for(Duration::from_secs(10), "port 7000 reported up", || {
            Ok((reported_state(&world, a, 7000) == Some(TargetState::Up)).then_some(()))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{:?}", world.registry()));
    }
    let mut stored: Vec<String> = world
        .registry()
        .iter()
        .map(|r| r.tunnel_address.to_string())
        .collect();
    stored.sort();
    let mut expected = vec![addr1.clone(), addr2.clone()];
    expected.sort();
    assert_eq!(
        stored, expected,
        "the registry holds both instances with their addresses"
    );
    let log1 = world.read_log("a1");
    let verified = log1
        .find("gateway evidence verified")
        .expect("agent logs the verification");
    let registered = log1
        .find("registered")
        .expect("agent logs the registration");
    assert!(
        verified < registered,
        "the gateway is verified before registering"
    );

    // kill -9 the gateway and start it again: both tunnels recover within 60 s with the same addresses.
    gw.kill();
    assert!(
        fetch(&lab, Host::Gateway, &addr1).is_err(),
        "no tunnel while the gateway is down"
    );
    let restarted = Instant::now();
    let _gw = world.default_gateway(&lab);
    wait_reachable(&lab, &addr1, "hello-from-cvm1", 60).unwrap();
    wait_reachable(&lab, &addr2, "hello-from-cvm2", 60).unwrap();
    eprintln!(
        "both agents reachable {:?} after the gateway restarted",
        restarted.elapsed()
    );
    assert!(
        world.read_log("gateway").contains("restored=2"),
        "{}",
        world.read_log("gateway")
    );

    // Restart an agent with the same state directory: same instance id, same address.
    let id_before = std::fs::read_to_string(world.scratch.path("state-a2/instance-id")).unwrap();
    a2.kill();
    wait_for(
        Duration::from_secs(10),
        "the old TUN device to vanish",
        || Ok((!lab.has_interface(Host::Cvm2, "tga-a2")).then_some(())),
    )
    .unwrap();
    let _a2 = world.default_agent(&lab, Host::Cvm2, "a2");
    let again = tunnel_address(&lab, Host::Cvm2, "a2").unwrap();
    assert_eq!(again, addr2, "same address after an agent restart");
    assert_eq!(
        std::fs::read_to_string(world.scratch.path("state-a2/instance-id")).unwrap(),
        id_before
    );
    wait_reachable(&lab, &addr2, "hello-from-cvm2", 30).unwrap();
    assert_eq!(world.registry().len(), 2, "no new instance was created");
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn refused_agents_and_refused_gateways_get_nothing() {
    let (lab, world) = World::in_lab("reg-refuse");
    world.write_gateway_policy_to("strict-gateway-policy.toml", BAD);
    let _gw = world.default_gateway(&lab);
    // cvm1: an agent whose measurement the app policy does not allow.
    let _bad_agent = world
        .start_agent(&lab, Host::Cvm1, "bad", &agent_config("sim-snp", BAD))
        .unwrap();
    // cvm2: a good agent whose policy does not accept this gateway's measurement.
    let _picky = world
        .start_agent(
            &lab,
            Host::Cvm2,
            "picky",
            &AgentConfig {
                gateway_policy: "strict-gateway-policy.toml".into(),
                ..AgentConfig::default()
            },
        )
        .unwrap();

    let bad_measurement = measurement(BAD);
    world.wait_log_with(
        "bad",
        "the refusal in the agent's log",
        &["policy_refused", APP, &bad_measurement],
    );
    world.wait_log_with(
        "picky",
        "the refused gateway in the agent's log",
        &["TLS handshake failed", "measurement"],
    );
    // Both keep retrying, and nothing reaches the registry or the tunnel.
    wait_for(
        Duration::from_secs(30),
        "the refused agent to retry",
        || Ok((world.read_log("bad").matches("policy_refused").count() >= 2).then_some(())),
    )
    .unwrap();
    assert!(
        world.read_log("bad").matches("policy_refused").count() >= 2,
        "the refused agent retries"
    );
    assert!(world.registry().is_empty(), "{:?}", world.registry());
    let gw_log = world.read_log("gateway");
    assert!(
        !gw_log.contains("peer added"),
        "the gateway's peer table is unchanged:\n{gw_log}"
    );
    assert!(!gw_log.contains("instance registered"), "{gw_log}");
    assert!(
        !world.read_log("picky").contains("sending the registration"),
        "{}",
        world.read_log("picky")
    );
    assert!(
        !lab.has_interface(Host::Cvm2, "tga-picky"),
        "no tunnel for the picky agent"
    );
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn a_sim_tdx_agent_registers_with_a_sim_snp_gateway() {
    let (lab, world) = World::in_lab("reg-tdx");
    let _gw = world.default_gateway(&lab);
    let _agent = world
        .start_agent(&lab, Host::Cvm3, "tdx", &agent_config("sim-tdx", GOOD))
        .unwrap();
    let addr = tunnel_address(&lab, Host::Cvm3, "tdx").unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\n{}",
            world.read_log("gateway"),
            world.read_log("tdx")
        )
    });
    // Nothing listens on the target yet: the agent reports port 7000 down, and a connection through the
    // forwarder is closed rather than answered.
    wait_for(Duration::from_secs(10), "port 7000 reported down", || {
        Ok((reported_state(&world, &addr, 7000) == Some(TargetState::Down)).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:?}\n{}", world.registry(), world.read_log("tdx")));
    let answer = fetch(&lab, Host::Gateway, &addr);
    assert!(
        answer.as_ref().map_or(true, String::is_empty),
        "no answer without a target: {answer:?}"
    );
    let _server = start_tcp_server(&lab, Host::Cvm3, "hello-from-tdx").unwrap();
    wait_reachable(&lab, &addr, "hello-from-tdx", 20).unwrap();
    let registry = world.registry();
    assert_eq!(registry.len(), 1);
    assert!(
        registry[0]
            .attestation
            .starts_with(&format!("sim-tdx mr_td={}", measurement(GOOD))),
        "{}",
        registry[0].attestation
    );
}

/// Across platforms: a `sim-tdx` gateway, a `sim-snp` agent and a `sim-tdx` agent verify each other's evidence in
/// mutual RA-TLS, register and are reachable through their tunnels; each side records the other's claims. A
/// `sim-tdx` agent whose MRTD the app policy does not allow is refused, and the refusal names MRTD and its value.
#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn tdx_and_snp_peers_register_across_platforms() {
    let (lab, world) = World::in_lab("reg-xplat");
    let _gw = world
        .start_gateway(
            &lab,
            &GatewayConfig {
                backend: "sim-tdx".into(),
                ..GatewayConfig::default()
            },
        )
        .unwrap();
    let _snp = world.default_agent(&lab, Host::Cvm1, "snp");
    let _tdx = world
        .start_agent(&lab, Host::Cvm2, "tdx", &agent_config("sim-tdx", GOOD))
        .unwrap();
    let _bad = world
        .start_agent(&lab, Host::Cvm3, "badtdx", &agent_config("sim-tdx", BAD))
        .unwrap();
    let _s1 = start_tcp_server(&lab, Host::Cvm1, "hello-from-snp").unwrap();
    let _s2 = start_tcp_server(&lab, Host::Cvm2, "hello-from-tdx").unwrap();
    let _logs = world.logs_on_failure(&["gateway", "snp", "tdx", "badtdx"]);

    let snp_addr = tunnel_address(&lab, Host::Cvm1, "snp").unwrap();
    let tdx_addr = tunnel_address(&lab, Host::Cvm2, "tdx").unwrap();
    assert_ne!(snp_addr, tdx_addr);
    for (addr, reply) in [(&snp_addr, "hello-from-snp"), (&tdx_addr, "hello-from-tdx")] {
        wait_reachable(&lab, addr, reply, 20).unwrap();
    }

    // Each agent read the gateway's TDX claims; the gateway recorded each agent's platform and measurement.
    let gateway_claims = format!("sim-tdx mr_td={}", measurement(GOOD));
    for name in ["snp", "tdx"] {
        let log = world.read_log(name);
        assert!(
            log.contains("gateway evidence verified") && log.contains(&gateway_claims),
            "{name} logs the gateway's claims:\n{log}"
        );
    }
    let mut recorded: Vec<(String, String)> = world
        .registry()
        .iter()
        .map(|r| (r.tunnel_address.to_string(), r.attestation.clone()))
        .collect();
    recorded.sort();
    let mut expected = vec![
        (
            snp_addr.clone(),
            format!("sim-snp measurement={}", measurement(GOOD)),
        ),
        (
            tdx_addr.clone(),
            format!("sim-tdx mr_td={}", measurement(GOOD)),
        ),
    ];
    expected.sort();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    for ((addr, attestation), (want_addr, want)) in recorded.iter().zip(&expected) {
        assert_eq!(addr, want_addr);
        assert!(
            attestation.starts_with(want.as_str()),
            "{attestation} / {want}"
        );
    }

    // The agent with a disallowed MRTD is refused with the field and its value, and gets no tunnel.
    let bad_mrtd = measurement(BAD);
    world.wait_log_with(
        "badtdx",
        "the MRTD refusal in the agent's log",
        &["policy_refused", "MRTD", &bad_mrtd],
    );
    assert!(
        !lab.has_interface(Host::Cvm3, "tga-badtdx"),
        "no tunnel for the refused agent"
    );
    assert_eq!(world.registry().len(), 2, "the refused agent is not stored");
}
