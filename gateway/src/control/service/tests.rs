use std::time::Duration;

use protocol::control::AppId;

use super::*;
use crate::control::tunnel::MemoryPeers;
use crate::registry::{Admission, MemoryStore};

#[path = "../../../tests/support/control_service.rs"]
mod fixture;

use fixture::{admitted, StandInPeer, APP};

const REFUSED_APP: &str = "cccccccccccccccc";

/// An attested peer whose measurement one app allows and another refuses.
const FAKE_PEER: StandInPeer = StandInPeer {
    refused_app: Some(REFUSED_APP),
    ..admitted(0x3f, u64::MAX)
};

/// A service over an in-memory registry and peer table.
pub(crate) fn service() -> (ControlService, Arc<MemoryPeers>) {
    fixture::memory_service(Duration::from_secs(100))
}

fn body(app: &str, instance: &str, key: u8) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 1,
        "app_id": app,
        "instance_id": instance,
        "wireguard_public_key": PublicKey::from_bytes([key; 32]).unwrap().to_string(),
        "ports": [{"port": 80}],
    }))
    .unwrap()
}

#[test]
fn registration_answers_and_adds_the_peer() {
    let (svc, peers) = service();
    let r = svc
        .register(&body(APP, "11111111", 1), Some(&FAKE_PEER), 10)
        .unwrap();
    assert_eq!(r.version, PROTOCOL_VERSION);
    assert_eq!(r.gateway.tunnel_address, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(r.gateway.endpoint, "198.18.0.2:51820");
    assert_eq!(
        (r.keepalive_secs, r.reregister_secs, r.tunnel_prefix_len),
        (25, 300, 8)
    );
    assert_eq!(r.base_domains, vec!["apps.example.com".to_string()]);
    let key = PublicKey::from_bytes([1; 32]).unwrap();
    assert_eq!(peers.snapshot().get(&key), Some(&r.tunnel_address));

    // A new key for the same instance replaces the peer, same address.
    let again = svc
        .register(&body(APP, "11111111", 2), Some(&FAKE_PEER), 11)
        .unwrap();
    assert_eq!(again.tunnel_address, r.tunnel_address);
    let snap = peers.snapshot();
    assert_eq!(snap.len(), 1);
    assert_eq!(
        snap.get(&PublicKey::from_bytes([2; 32]).unwrap()),
        Some(&r.tunnel_address)
    );
}

type Case<'a> = (Vec<u8>, Option<&'a dyn PeerAttestation>, ErrorCode, &'a str);

#[test]
fn refusals_are_typed_and_change_nothing() {
    let (svc, peers) = service();
    svc.register(&body(APP, "11111111", 1), Some(&FAKE_PEER), 10)
        .unwrap();
    let before = peers.snapshot();
    let cases: Vec<Case<'_>> = vec![
        (
            body(APP, "22222222", 1),
            Some(&FAKE_PEER),
            ErrorCode::KeyInUse,
            "11111111",
        ),
        (
            body(REFUSED_APP, "33333333", 3),
            Some(&FAKE_PEER),
            ErrorCode::PolicyRefused,
            "measurement 3f00",
        ),
        (
            body("dddddddddddddddd", "33333333", 3),
            Some(&FAKE_PEER),
            ErrorCode::AppUnknown,
            "unknown",
        ),
        (
            body(APP, REFUSED_APP, 3),
            Some(&FAKE_PEER),
            ErrorCode::InstanceIdIsAppId,
            "also an app id",
        ),
        (
            body(APP, "33333333", 3),
            None,
            ErrorCode::AttestationRequired,
            "RA-TLS",
        ),
        (
            b"{garbage".to_vec(),
            Some(&FAKE_PEER),
            ErrorCode::MalformedRequest,
            "JSON",
        ),
        (
            body(APP, "33333333", 3).replace_version(7),
            Some(&FAKE_PEER),
            ErrorCode::UnsupportedVersion,
            "unsupported protocol version 7",
        ),
    ];
    for (b, peer, code, needle) in cases {
        let e = svc.register(&b, peer, 20).unwrap_err();
        assert_eq!(e.error, code, "{e}");
        assert!(e.message.contains(needle), "{code:?}: {}", e.message);
    }
    assert_eq!(svc.registry().lock().unwrap().len(), 1);
    assert_eq!(peers.snapshot(), before);
}

trait ReplaceVersion {
    fn replace_version(self, v: u32) -> Vec<u8>;
}

impl ReplaceVersion for Vec<u8> {
    fn replace_version(self, v: u32) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_slice(&self).unwrap();
        value["version"] = v.into();
        serde_json::to_vec(&value).unwrap()
    }
}

#[test]
fn restore_and_expire_drive_the_peer_table() {
    let (svc, peers) = service();
    svc.register(&body(APP, "11111111", 1), Some(&FAKE_PEER), 1000)
        .unwrap();
    svc.register(&body(APP, "22222222", 2), Some(&FAKE_PEER), 1090)
        .unwrap();
    peers.remove_peer(&PublicKey::from_bytes([1; 32]).unwrap());
    peers.remove_peer(&PublicKey::from_bytes([2; 32]).unwrap());
    assert_eq!(svc.restore_peers(), 2);
    assert_eq!(peers.snapshot().len(), 2);
    assert_eq!(svc.expire(1150), 1);
    let snap = peers.snapshot();
    assert_eq!(snap.len(), 1);
    assert!(snap.contains_key(&PublicKey::from_bytes([2; 32]).unwrap()));
}

/// Registers `instance` of [`APP`] with key `key` at `now`, its evidence showing `measurement` and valid until
/// `valid_until`; panics when it is refused.
fn register_admitted(
    svc: &ControlService,
    instance: &str,
    key: u8,
    (measurement, valid_until): (u8, u64),
    now: u64,
) {
    let peer = admitted(measurement, valid_until);
    svc.register(&body(APP, instance, key), Some(&peer), now)
        .unwrap();
}

/// A policy that allows only measurement `allowed`.
fn only(allowed: u8) -> impl Fn(&InstanceRecord) -> Result<(), String> {
    move |r| match r.claims.as_ref().and_then(|c| c.snp()) {
        Some(snp) if snp.measurement == [allowed; 48] => Ok(()),
        _ => Err(format!("measurement is not {allowed:02x}")),
    }
}

#[test]
fn a_changed_policy_removes_the_instances_it_no_longer_admits_from_registry_and_tunnel() {
    let (svc, peers) = service();
    register_admitted(&svc, "11111111", 1, (1, 1000), 10);
    register_admitted(&svc, "22222222", 2, (2, 1000), 10);
    assert_eq!(peers.snapshot().len(), 2);
    assert_eq!(svc.revoke(20, only(1)), 1);
    let registry = svc.registry().lock().unwrap();
    assert!(registry.get(&"22222222".parse().unwrap()).is_none());
    assert!(registry.get(&"11111111".parse().unwrap()).is_some());
    drop(registry);
    let snap = peers.snapshot();
    assert_eq!(snap.len(), 1);
    assert!(snap.contains_key(&PublicKey::from_bytes([1; 32]).unwrap()));
    assert_eq!(svc.revocations().by_reason()[0], ("policy", 1));
    // A policy that admits what is left removes nothing more.
    assert_eq!(svc.revoke(21, only(1)), 0);
}

#[test]
fn evidence_that_ended_without_renewal_removes_the_instance() {
    let (svc, peers) = service();
    register_admitted(&svc, "11111111", 1, (1, 100), 10);
    register_admitted(&svc, "22222222", 2, (1, 500), 10);
    assert_eq!(svc.revoke(100, only(1)), 0, "valid up to its last second");
    assert_eq!(svc.revoke(101, only(1)), 1);
    assert_eq!(peers.snapshot().len(), 1);
    // Registering again with fresh evidence moves the end.
    register_admitted(&svc, "22222222", 2, (1, 900), 400);
    assert_eq!(svc.revoke(600, only(1)), 0);
    assert_eq!(svc.revocations().by_reason()[1], ("evidence_expired", 1));
    let mut metrics = String::new();
    svc.revocations().render(&mut metrics);
    assert!(
        metrics.contains("tee_gateway_instances_revoked_total{reason=\"evidence_expired\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_refused_registration_removes_its_own_instance_but_not_one_it_only_names() {
    let (svc, peers) = service();
    register_admitted(&svc, "11111111", 1, (1, 1000), 10);
    let refused = StandInPeer {
        refused: true,
        ..admitted(1, 1000)
    };
    // Naming the instance with another key (another CVM) evicts nothing.
    let e = svc
        .register(&body(APP, "11111111", 7), Some(&refused), 20)
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::PolicyRefused);
    assert_eq!(peers.snapshot().len(), 1);
    // The instance itself, now refused, leaves the registry and the tunnel.
    svc.register(&body(APP, "11111111", 1), Some(&refused), 30)
        .unwrap_err();
    assert!(peers.snapshot().is_empty());
    assert!(svc.registry().lock().unwrap().is_empty());
    assert_eq!(
        svc.revocations().by_reason()[2],
        ("refused_registration", 1)
    );
}

#[test]
fn a_full_app_refuses_new_instances_but_never_a_known_one() {
    let (svc, peers) = service();
    svc.registry().lock().unwrap().set_max_instances_per_app(2);
    for (instance, key) in [("11111111", 1), ("22222222", 2)] {
        svc.register(&body(APP, instance, key), Some(&FAKE_PEER), 10)
            .unwrap();
    }
    let before = peers.snapshot();
    let e = svc
        .register(&body(APP, "33333333", 3), Some(&FAKE_PEER), 11)
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InstanceQuotaExceeded, "{e}");
    assert_eq!(e.http_status(), 403);
    assert!(e.message.contains("max_instances_per_app"), "{}", e.message);
    assert_eq!(peers.snapshot(), before, "no peer for the refused instance");
    // Re-registration at the quota, also with a new key, is answered as before.
    let again = svc
        .register(&body(APP, "22222222", 7), Some(&FAKE_PEER), 12)
        .unwrap();
    assert_eq!(
        peers
            .snapshot()
            .get(&PublicKey::from_bytes([7; 32]).unwrap()),
        Some(&again.tunnel_address)
    );
    assert_eq!(svc.registry().lock().unwrap().len(), 2);
}
