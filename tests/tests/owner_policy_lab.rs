//! Who decides which CVMs may serve an app, performed against the real gateway and agents: the app's owner, by the
//! policy its key signs. The operator's apps file cannot add a measurement, an old signed policy replayed by a
//! stale agent or through the admin API changes nothing, and a policy another key signed for the app is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod registration;

use std::time::Duration;

use registration::*;
use test_support::{configs, wait_for, Host};

/// The operator's apps file with a profile of its own CVM's measurement for [`APP`] (the format that admitted).
fn operator_file_admitting(measurement_byte: &str) -> String {
    format!(
        "[[apps.{APP}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
        measurement(measurement_byte)
    )
}

/// The operator writes its CVM's measurement into the apps file: at start the gateway refuses the file (saying how
/// to move profiles into a signed policy); written while the gateway runs, the reload is refused and the previous
/// file stays; the operator's CVM (measurement [`BAD`], carrying the owner's policy) is refused and never enters the
/// registry, while the owner's CVM ([`GOOD`]) serves.
#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn a_measurement_the_operator_adds_does_not_admit_a_cvm_the_owner_did_not_sign_for() {
    let (lab, world) = World::in_lab("owner-operator");
    let _logs = world.logs_on_failure(&["gateway", "owner", "rogue"]);
    let apps = world.scratch.path("apps.toml");
    std::fs::write(&apps, operator_file_admitting(BAD)).unwrap();
    let gateway = world.default_gateway(&lab);
    let out = gateway.wait_output(Duration::from_secs(30)).unwrap();
    assert!(
        !out.status.success(),
        "the gateway started with profiles in the operator's file"
    );
    let log = world.read_log("gateway");
    assert!(
        log.contains("no longer lists profiles") && log.contains("gateway app sign-policy"),
        "{log}"
    );

    std::fs::write(&apps, configs::operator_apps()).unwrap();
    let stack = world.start_quiet_stack(&lab, "owner");
    let owner_id = world.instance_at(&stack.addr).unwrap().instance_id;
    let changed = unix_now();
    std::fs::write(
        &apps,
        format!(
            "{}{}",
            configs::operator_apps(),
            operator_file_admitting(BAD)
        ),
    )
    .unwrap();
    world.wait_line(
        "gateway",
        "reloading the operator's apps file failed",
        changed,
        10,
    );

    let started = unix_now();
    let _rogue = world
        .start_agent(&lab, Host::Cvm2, "rogue", &agent_config("sim-snp", BAD))
        .unwrap();
    let (_, refused) = world.wait_line("rogue", "policy_refused", started, 25);
    assert!(
        refused.contains(&measurement(BAD)) || refused.contains("measurement"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let registry = world.registry();
    assert_eq!(registry.len(), 1, "{registry:?}");
    assert_eq!(registry[0].instance_id, owner_id);
}

/// The owner publishes version 2, which stops allowing the running agent's measurement: the instance goes at once.
/// The agent, stale, registers again carrying version 1 (which allowed it): refused, version 2 stays in force. The
/// owner's (or anyone's) upload of version 1 through the admin API changes nothing either, and a policy signed by
/// another key for the app is refused.
#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn an_old_signed_policy_replayed_by_a_stale_agent_or_the_admin_api_changes_nothing() {
    let (lab, world) = World::in_lab("owner-replay");
    let v1 = world.scratch.path("app-policy-v1.json");
    std::fs::copy(world.scratch.path("app-policy.json"), &v1).unwrap();
    let agent = AgentConfig {
        app_policy: Some("app-policy-v1.json".into()),
        ..AgentConfig::default()
    };
    let gateway = GatewayConfig {
        reregister_secs: 10,
        ..GatewayConfig::default()
    };
    let stack = world.start_stack(&lab, &gateway, &agent, Host::Cvm1, "stale");
    let id = world.instance_at(&stack.addr).unwrap().instance_id;

    let changed = unix_now();
    let answer = world.publish_app_policy(&lab, &[BAD]);
    assert_eq!(
        (answer["version"].as_u64(), answer["installed"].as_bool()),
        (Some(2), Some(true)),
        "{answer}"
    );
    let (_, removed) = world.wait_line("gateway", "instance removed", changed, 10);
    assert!(
        removed.contains(id.as_str()) && removed.contains("reason=\"policy\""),
        "{removed}"
    );

    // The stale agent brings version 1 at its next registration: kept out, and refused under version 2.
    let (_, refused) = world.wait_line("stale", "policy_refused", changed, 25);
    assert!(refused.contains("owner policy version 2"), "{refused}");
    wait_for(
        Duration::from_secs(10),
        "a second refused registration",
        || Ok((world.lines_with("stale", "policy_refused").len() >= 2).then_some(())),
    )
    .unwrap();
    assert!(
        world.instance(id.as_str()).is_none(),
        "the stale agent is back in rotation"
    );

    let replayed = world.upload_app_policy(&lab, &v1).unwrap();
    assert_eq!(
        (
            replayed["version"].as_u64(),
            replayed["installed"].as_bool()
        ),
        (Some(2), Some(false)),
        "{replayed}"
    );

    // Another key signs a policy for this app id allowing the agent's measurement: refused, nothing changes.
    let forged = world.scratch.path("forged.json");
    let body = serde_json::json!({
        "app_id": APP, "version": 9,
        "profile": [{"platform": "sim-snp", "measurement": measurement(GOOD), "min_tcb": {"bootloader": 0}}],
    });
    let other = configs::lab_owner(configs::LAB_APPS[1].0);
    std::fs::write(
        &forged,
        attestation::owner::SignedPolicy::sign_bytes(&other, body.to_string()).to_json(),
    )
    .unwrap();
    let refused = world.upload_app_policy(&lab, &forged).unwrap();
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("signing key owns app"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(world.instance(id.as_str()).is_none());
}
