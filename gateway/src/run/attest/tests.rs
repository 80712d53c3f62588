//! Admission under the app owner's signed policy, through the registration service with the gateway's own
//! [`AgentClaims`]: the operator's file cannot admit, an old policy cannot roll back, another key cannot sign.

use std::sync::Arc;

use attestation::owner::{OwnerKey, SignedPolicy};
use attestation::policy::PolicyFile;
use protocol::control::{ErrorCode, PublicKey, RegisterResponse};

use super::*;
use crate::control::service::tests::service;
use crate::control::ControlService;
use crate::registry::policy_fixtures::{owner, signed};

/// A policy of `key`'s app at `version` accepting simulated SNP measurement `[m; 48]`, as JSON text.
fn policy(key: &OwnerKey, version: u64, m: u8) -> String {
    signed(key, version, m).to_json()
}

/// The operator's apps file with `text`, and the directory holding it.
fn operator(text: &str) -> (tempfile::TempDir, Arc<PolicyFile<OperatorApps>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.toml");
    std::fs::write(&path, text).unwrap();
    (dir, load_policy(&path).unwrap())
}

/// An agent whose verified evidence shows simulated SNP measurement `[m; 48]`.
fn agent(m: u8, operator: &Arc<PolicyFile<OperatorApps>>) -> AgentClaims {
    AgentClaims {
        claims: Arc::new(test_support::claims::sim_snp(m)),
        valid_until: u64::MAX,
        policy: operator.clone(),
    }
}

/// A registration body of `instance` (key byte `k`) for `key`'s app, carrying `policy` when given.
fn body(key: &OwnerKey, instance: &str, k: u8, policy: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "version": 1,
        "app_id": key.app_id(),
        "instance_id": instance,
        "wireguard_public_key": PublicKey::from_bytes([k; 32]).unwrap().to_string(),
        "ports": [{"port": 80}],
    });
    if let Some(p) = policy {
        v["app_policy"] = p.into();
    }
    serde_json::to_vec(&v).unwrap()
}

/// Registers, at `now`, instance `nnnnnnnn` (key byte `n`) of owner 1's app carrying `policy` when given, from an
/// agent whose evidence shows measurement `m`, under the operator's file `apps`.
fn register_as(
    svc: &ControlService,
    n: u8,
    policy: Option<&str>,
    m: u8,
    apps: &Arc<PolicyFile<OperatorApps>>,
    now: u64,
) -> Result<RegisterResponse, ErrorBody> {
    let instance = n.to_string().repeat(8);
    svc.register(
        &body(&owner(1), &instance, n, policy),
        Some(&agent(m, apps)),
        now,
    )
}

fn version_in_force(svc: &ControlService, key: &OwnerKey) -> Option<u64> {
    svc.registry()
        .lock()
        .unwrap()
        .owner_policy(&key.app_id())
        .map(|p| p.version())
}

#[test]
fn without_an_owner_policy_no_instance_is_admitted() {
    let (svc, peers) = service();
    let (_d, apps) = operator("");
    let e = register_as(&svc, 1, None, 7, &apps, 10).unwrap_err();
    assert_eq!(e.error, ErrorCode::AppUnknown, "{e}");
    assert!(e.message.contains("app_policy"), "{}", e.message);
    assert!(peers.snapshot().is_empty());
}

#[test]
fn an_owner_policy_carried_by_a_registration_admits_what_it_lists_only() {
    let (svc, _) = service();
    let (_d, apps) = operator("");
    let v1 = policy(&owner(1), 1, 7);
    register_as(&svc, 1, Some(&v1), 7, &apps, 10).unwrap();
    assert_eq!(version_in_force(&svc, &owner(1)), Some(1));
    // Another CVM of the "app" whose measurement the owner did not sign for: refused, even carrying the policy.
    let e = register_as(&svc, 2, Some(&v1), 9, &apps, 11).unwrap_err();
    assert_eq!(e.error, ErrorCode::PolicyRefused, "{e}");
    assert!(
        e.message.contains("measurement not allowed"),
        "{}",
        e.message
    );
}

#[test]
fn the_operators_file_cannot_admit_a_measurement_the_owner_did_not_sign_for() {
    let (svc, _) = service();
    // The operator lists the app with the profile of its own CVM: the file is refused, so nothing loads.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.toml");
    std::fs::write(
        &path,
        format!(
            "[[apps.{}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
            owner(1).app_id(),
            hex::encode([9u8; 48])
        ),
    )
    .unwrap();
    let e = crate::report::error_chain(&load_policy(&path).unwrap_err());
    assert!(e.contains("gateway app sign-policy"), "{e}");
    // With a file the gateway accepts, the operator's CVM (measurement 9) stays out; the owner's (7) gets in.
    let (_d, apps) = operator(&format!("[apps.{}]\n", owner(1).app_id()));
    let v1 = policy(&owner(1), 1, 7);
    let e = register_as(&svc, 2, Some(&v1), 9, &apps, 11).unwrap_err();
    assert_eq!(e.error, ErrorCode::PolicyRefused, "{e}");
    register_as(&svc, 1, None, 7, &apps, 12).unwrap();
}

#[test]
fn an_old_policy_replayed_by_a_stale_agent_changes_nothing() {
    let (svc, peers) = service();
    let (_d, apps) = operator("");
    let (v1, v2) = (policy(&owner(1), 1, 9), policy(&owner(1), 2, 7));
    register_as(&svc, 1, Some(&v2), 7, &apps, 10).unwrap();
    // A stale agent, measurement 9, carries version 1 that allowed it: version 2 stays, and refuses it.
    let e = register_as(&svc, 2, Some(&v1), 9, &apps, 11).unwrap_err();
    assert_eq!(e.error, ErrorCode::PolicyRefused, "{e}");
    assert_eq!(version_in_force(&svc, &owner(1)), Some(2));
    assert_eq!(peers.snapshot().len(), 1);
    // The owner's upload of version 1 is no different.
    let kept = svc
        .offer_policy(&owner(1).app_id().parse().unwrap(), &v1, 12)
        .unwrap();
    assert_eq!(kept.version_in_force(), 2);
    assert_eq!(svc.registry().lock().unwrap().len(), 1);
}

#[test]
fn a_policy_signed_by_another_key_for_this_app_is_refused() {
    let (svc, peers) = service();
    let (_d, apps) = operator("");
    // Key 2 signs a policy naming key 1's app and admitting measurement 9.
    let body_json = serde_json::json!({
        "app_id": owner(1).app_id(), "version": 5,
        "profile": [{"platform": "sim-snp", "measurement": hex::encode([9u8; 48]), "min_tcb": {"bootloader": 0}}],
    });
    let forged = SignedPolicy::sign_bytes(&owner(2), body_json.to_string()).to_json();
    let e = register_as(&svc, 2, Some(&forged), 9, &apps, 11).unwrap_err();
    assert_eq!(e.error, ErrorCode::PolicyRefused, "{e}");
    assert!(e.message.contains("signing key owns app"), "{}", e.message);
    assert_eq!(version_in_force(&svc, &owner(1)), None);
    assert!(peers.snapshot().is_empty());
}

#[test]
fn a_new_version_removes_the_instances_it_no_longer_admits_at_once() {
    let (svc, peers) = service();
    let (_d, apps) = operator("");
    let app = owner(1).app_id().parse().unwrap();
    register_as(&svc, 1, Some(&policy(&owner(1), 1, 7)), 7, &apps, 10).unwrap();
    assert_eq!(peers.snapshot().len(), 1);
    svc.offer_policy(&app, &policy(&owner(1), 2, 8), 11)
        .unwrap();
    assert!(peers.snapshot().is_empty(), "removed from the tunnel");
    assert!(
        svc.registry().lock().unwrap().is_empty(),
        "and from the registry"
    );
    assert_eq!(svc.revocations().by_reason()[0], ("policy", 1));
}

#[test]
fn the_operator_may_still_deny_an_app() {
    let (svc, peers) = service();
    let (_d, open) = operator("");
    register_as(&svc, 1, Some(&policy(&owner(1), 1, 7)), 7, &open, 10).unwrap();
    let (_d2, denied) = operator(&format!("[apps.{}]\ndeny = true\n", owner(1).app_id()));
    let e = register_as(&svc, 2, None, 7, &denied, 11).unwrap_err();
    assert_eq!(e.error, ErrorCode::PolicyRefused, "{e}");
    assert!(e.message.contains("denied"), "{}", e.message);
    let removed = svc.revoke_under(12, |r, owner| still_admitted(&denied.current(), owner, r));
    assert_eq!(removed, 1);
    assert!(peers.snapshot().is_empty());
}
