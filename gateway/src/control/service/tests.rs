use std::time::Duration;

use protocol::control::AppId;

use super::*;
use crate::control::tunnel::MemoryPeers;
use crate::registry::{MemoryStore, RegistryStore};

const APP: &str = "aaaaaaaaaaaaaaaa";
const REFUSED_APP: &str = "cccccccccccccccc";

/// An attested peer whose measurement one app allows and another refuses.
#[derive(Debug)]
struct FakePeer;

impl PeerAttestation for FakePeer {
    fn authorize(&self, app_id: &AppId) -> Result<String, ErrorBody> {
        match app_id.as_str() {
            APP => Ok("sim-snp measurement=3f00".into()),
            REFUSED_APP => Err(ErrorBody::new(
                ErrorCode::PolicyRefused,
                format!("measurement 3f00 is not allowed for app {app_id}"),
            )),
            other => Err(ErrorBody::new(
                ErrorCode::AppUnknown,
                format!("app {other} is unknown"),
            )),
        }
    }
    fn is_app_id(&self, id: &str) -> bool {
        id == APP || id == REFUSED_APP
    }
}

/// A service over an in-memory registry and peer table.
pub(crate) fn service() -> (ControlService, Arc<MemoryPeers>) {
    let registry = Registry::open(
        Box::new(MemoryStore::new()) as Box<dyn RegistryStore>,
        "10.0.0.0/8".parse().unwrap(),
        Ipv4Addr::new(10, 0, 0, 1),
        Duration::from_secs(100),
    )
    .unwrap();
    let peers = Arc::new(MemoryPeers::default());
    let settings = ResponseSettings {
        gateway_key: WireGuardKey::from_bytes([0xee; 32]).unwrap(),
        gateway_endpoint: "198.18.0.2:51820".into(),
        gateway_address: Ipv4Addr::new(10, 0, 0, 1),
        prefix_len: 8,
        keepalive_secs: 25,
        reregister_secs: 300,
        base_domains: vec!["apps.example.com".into()],
    };
    (
        ControlService::new(Arc::new(Mutex::new(registry)), peers.clone(), settings),
        peers,
    )
}

fn body(app: &str, instance: &str, key: u8) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 1,
        "app_id": app,
        "instance_id": instance,
        "wireguard_public_key": WireGuardKey::from_bytes([key; 32]).unwrap().to_string(),
        "ports": [{"port": 80}],
    }))
    .unwrap()
}

#[test]
fn registration_answers_and_adds_the_peer() {
    let (svc, peers) = service();
    let r = svc
        .register(&body(APP, "11111111", 1), Some(&FakePeer), 10)
        .unwrap();
    assert_eq!(r.version, PROTOCOL_VERSION);
    assert_eq!(r.gateway.tunnel_address, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(r.gateway.endpoint, "198.18.0.2:51820");
    assert_eq!(
        (r.keepalive_secs, r.reregister_secs, r.tunnel_prefix_len),
        (25, 300, 8)
    );
    assert_eq!(r.base_domains, vec!["apps.example.com".to_string()]);
    let key = WireGuardKey::from_bytes([1; 32]).unwrap();
    assert_eq!(peers.snapshot().get(&key), Some(&r.tunnel_address));

    // A new key for the same instance replaces the peer, same address.
    let again = svc
        .register(&body(APP, "11111111", 2), Some(&FakePeer), 11)
        .unwrap();
    assert_eq!(again.tunnel_address, r.tunnel_address);
    let snap = peers.snapshot();
    assert_eq!(snap.len(), 1);
    assert_eq!(
        snap.get(&WireGuardKey::from_bytes([2; 32]).unwrap()),
        Some(&r.tunnel_address)
    );
}

type Case<'a> = (Vec<u8>, Option<&'a dyn PeerAttestation>, ErrorCode, &'a str);

#[test]
fn refusals_are_typed_and_change_nothing() {
    let (svc, peers) = service();
    svc.register(&body(APP, "11111111", 1), Some(&FakePeer), 10)
        .unwrap();
    let before = peers.snapshot();
    let cases: Vec<Case<'_>> = vec![
        (
            body(APP, "22222222", 1),
            Some(&FakePeer),
            ErrorCode::KeyInUse,
            "11111111",
        ),
        (
            body(REFUSED_APP, "33333333", 3),
            Some(&FakePeer),
            ErrorCode::PolicyRefused,
            "measurement 3f00",
        ),
        (
            body("dddddddddddddddd", "33333333", 3),
            Some(&FakePeer),
            ErrorCode::AppUnknown,
            "unknown",
        ),
        (
            body(APP, REFUSED_APP, 3),
            Some(&FakePeer),
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
            Some(&FakePeer),
            ErrorCode::MalformedRequest,
            "JSON",
        ),
        (
            body(APP, "33333333", 3).replace_version(7),
            Some(&FakePeer),
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
    svc.register(&body(APP, "11111111", 1), Some(&FakePeer), 1000)
        .unwrap();
    svc.register(&body(APP, "22222222", 2), Some(&FakePeer), 1090)
        .unwrap();
    peers.remove_peer(&WireGuardKey::from_bytes([1; 32]).unwrap());
    peers.remove_peer(&WireGuardKey::from_bytes([2; 32]).unwrap());
    assert_eq!(svc.restore_peers(), 2);
    assert_eq!(peers.snapshot().len(), 2);
    assert_eq!(svc.expire(1150), 1);
    let snap = peers.snapshot();
    assert_eq!(snap.len(), 1);
    assert!(snap.contains_key(&WireGuardKey::from_bytes([2; 32]).unwrap()));
}
