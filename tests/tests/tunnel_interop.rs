//! Interoperability with a standard WireGuard peer: `wireguard-go` configured with `wg`, our endpoint once as
//! the initiator and once as the responder; ping and a 100 MB TCP transfer with matching hashes each way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::path::Path;

use test_support::tunnel::{
    counter, peer_arg, ping, tcp_transfer, EndpointProc, KeyPair, WireguardGo,
};
use test_support::{Host, Lab, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_tunnel-endpoint");

/// Our endpoint in `gateway` (10.0.0.1), wireguard-go in `cvm1` (10.0.0.2). `ours_initiates` decides who
/// knows the other's network address and so who must start the handshake.
fn interop(ours_initiates: bool) {
    let lab = Lab::up().unwrap();
    let dir = Scratch::new("interop");
    let ours_key = KeyPair::generate(&dir, "ours").unwrap();
    let wg_key = KeyPair::generate(&dir, "wg").unwrap();

    let wg = WireguardGo::start(&lab, Host::Cvm1, &wg_key, 51820, "10.0.0.2/24").unwrap();
    let peer_endpoint: &[&str] = if ours_initiates {
        &["endpoint=198.18.0.11:51820"]
    } else {
        &[]
    };
    let mut ours = EndpointProc::start_on(
        &lab,
        Host::Gateway,
        Path::new(BIN),
        &ours_key,
        ("tg0", "10.0.0.1/24"),
        &[peer_arg(&wg_key.public, "10.0.0.2", peer_endpoint)],
    )
    .unwrap();
    let wg_endpoint = (!ours_initiates).then_some("198.18.0.1:51820");
    wg.add_peer(&lab, &ours_key.public, "10.0.0.1", wg_endpoint)
        .unwrap();

    let (first, first_target, second, second_target) = if ours_initiates {
        (Host::Gateway, "10.0.0.2", Host::Cvm1, "10.0.0.1")
    } else {
        (Host::Cvm1, "10.0.0.1", Host::Gateway, "10.0.0.2")
    };
    assert!(
        ping(&lab, first, first_target, 3),
        "first ping from {} failed",
        first.name()
    );
    assert!(
        ping(&lab, second, second_target, 3),
        "ping back from {} failed",
        second.name()
    );

    // Both sides saw the handshake.
    let stats = ours.peer(&wg_key.public).unwrap();
    assert!(stats["last_handshake_ms"].as_u64().is_some(), "{stats}");
    let handshakes = wg.latest_handshakes(&lab).unwrap();
    assert_eq!(handshakes.len(), 1);
    assert_eq!(handshakes[0].0, ours_key.public.to_string());
    assert!(handshakes[0].1 > 0, "wireguard-go saw no handshake");

    tcp_transfer(&lab, Host::Gateway, Host::Cvm1, "10.0.0.1", 5001, 100 << 20).unwrap();
    tcp_transfer(&lab, Host::Cvm1, Host::Gateway, "10.0.0.2", 5002, 100 << 20).unwrap();

    let stats = ours.peer(&wg_key.public).unwrap();
    assert!(counter(&stats, &["rx_bytes"]) > 100 << 20, "{stats}");
    assert!(counter(&stats, &["tx_bytes"]) > 100 << 20, "{stats}");
    assert_eq!(counter(&stats, &["drops", "spoofed_source"]), 0, "{stats}");
    assert_eq!(
        counter(&stats, &["drops", "wrong_destination"]),
        0,
        "{stats}"
    );
    if !ours_initiates {
        // We learnt wireguard-go's address from its handshake.
        assert_eq!(stats["endpoint"], "198.18.0.11:51820");
    }
    ours.stop().unwrap();
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices, wireguard-go"]
fn interop_with_wireguard_go_ours_initiates() {
    interop(true);
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices, wireguard-go"]
fn interop_with_wireguard_go_ours_responds() {
    interop(false);
}
