//! Our endpoint to our endpoint across the lab: handshake, ping, a 100 MB TCP transfer with matching hashes,
//! and the counters and health that the registry reads.

use std::path::Path;

use tee_gateway_tests::tunnel::{ping, tcp_transfer, EndpointProc, KeyPair, TempDir};
use tee_gateway_tests::{Host, Lab};

const BIN: &str = env!("CARGO_BIN_EXE_tunnel-endpoint");

#[test]
fn ours_to_ours_ping_and_100_mb_transfer() {
    let lab = Lab::up().unwrap();
    let dir = TempDir::new("tunnel").unwrap();
    let gw_key = KeyPair::generate(&dir, "gateway").unwrap();
    let cvm_key = KeyPair::generate(&dir, "cvm1").unwrap();
    let mut gw = EndpointProc::start(
        &lab,
        Host::Gateway,
        Path::new(BIN),
        &gw_key,
        &[
            "--address=10.0.0.1/24".into(),
            "--tun-name=tg0".into(),
            format!("--peer=key={},ip=10.0.0.2", cvm_key.public),
        ],
    )
    .unwrap();
    let mut cvm = EndpointProc::start(
        &lab,
        Host::Cvm1,
        Path::new(BIN),
        &cvm_key,
        &[
            "--address=10.0.0.2/24".into(),
            "--tun-name=tg0".into(),
            format!(
                "--peer=key={},ip=10.0.0.1,endpoint=198.18.0.1:51820",
                gw_key.public
            ),
        ],
    )
    .unwrap();

    // Before any traffic there is no handshake and the peer is not healthy.
    let before = gw.peer(&cvm_key.public).unwrap();
    assert_eq!(before["last_handshake_ms"], serde_json::Value::Null);
    assert_eq!(before["healthy"], false);

    assert!(
        ping(&lab, Host::Cvm1, "10.0.0.1", 3),
        "cvm1 cannot ping the gateway through the tunnel"
    );
    assert!(
        ping(&lab, Host::Gateway, "10.0.0.2", 3),
        "the gateway cannot ping cvm1 through the tunnel"
    );

    tcp_transfer(&lab, Host::Gateway, Host::Cvm1, "10.0.0.1", 5001, 100 << 20).unwrap();
    tcp_transfer(&lab, Host::Cvm1, Host::Gateway, "10.0.0.2", 5002, 100 << 20).unwrap();

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (ep, peer) in [(&mut gw, &cvm_key), (&mut cvm, &gw_key)] {
        let stats = ep.peer(&peer.public).unwrap();
        let handshake = stats["last_handshake_ms"]
            .as_u64()
            .expect("handshake time reported");
        assert!(
            handshake <= now_ms && now_ms - handshake < 60_000,
            "{stats}"
        );
        assert_eq!(stats["healthy"], true, "{stats}");
        assert!(stats["rx_bytes"].as_u64().unwrap() > 100 << 20, "{stats}");
        assert!(stats["tx_bytes"].as_u64().unwrap() > 100 << 20, "{stats}");
        assert_eq!(stats["drops"]["spoofed_source"], 0, "{stats}");
        assert_eq!(stats["drops"]["wrong_destination"], 0, "{stats}");
    }
    // The gateway learnt cvm1's endpoint from its authenticated packets.
    assert_eq!(
        gw.peer(&cvm_key.public).unwrap()["endpoint"],
        "198.18.0.11:51820"
    );

    gw.stop().unwrap();
    cvm.stop().unwrap();
    // The TUN device goes away with the endpoint.
    assert!(!lab.succeeds(Host::Gateway, &["ip", "link", "show", "tg0"]));
}
