//! Isolation at the gateway: one endpoint with three peers. Every peer reaches the gateway; no peer reaches
//! another peer through it; a packet with a spoofed source is dropped; each drop is counted.
//!
//! The attacking peer (cvm1) is `wireguard-go`, configured to route the whole tunnel subnet to the gateway
//! (an honest peer of ours would refuse to send such packets at all); cvm2 and cvm3 run our endpoint.

use std::path::Path;

use tee_gateway_tests::tunnel::{
    counter, peer_arg, ping, EndpointProc, KeyPair, TempDir, WireguardGo,
};
use tee_gateway_tests::{Host, Lab};

const BIN: &str = env!("CARGO_BIN_EXE_tunnel-endpoint");

#[test]
fn peers_reach_the_gateway_but_not_each_other_and_spoofed_sources_are_dropped() {
    let lab = Lab::up().unwrap();
    // Let the gateway's kernel forward and accept any source, so that only the endpoint stands between peers.
    lab.run(
        Host::Gateway,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ],
    )
    .unwrap();
    let dir = TempDir::new("isolation").unwrap();
    let gw_key = KeyPair::generate(&dir, "gateway").unwrap();
    let keys: Vec<KeyPair> = (1..=3)
        .map(|i| KeyPair::generate(&dir, &format!("cvm{i}")).unwrap())
        .collect();
    let mut gw = EndpointProc::start(
        &lab,
        Host::Gateway,
        Path::new(BIN),
        &gw_key,
        &[
            "--address=10.0.0.1/24".into(),
            "--tun-name=tg0".into(),
            peer_arg(&keys[0].public, "10.0.0.2", &[]),
            peer_arg(&keys[1].public, "10.0.0.3", &[]),
            peer_arg(&keys[2].public, "10.0.0.4", &[]),
        ],
    )
    .unwrap();

    // cvm1: wireguard-go, sending anything in 10.0.0.0/24 to the gateway.
    let attacker = WireguardGo::start(&lab, Host::Cvm1, &keys[0], 51820, "10.0.0.2/24").unwrap();
    let wide_peer = [
        "wg",
        "set",
        &attacker.ifname,
        "peer",
        &gw_key.public.to_string(),
        "allowed-ips",
        "10.0.0.0/24",
        "endpoint",
        "198.18.0.1:51820",
    ]
    .map(String::from);
    lab.run(
        Host::Cvm1,
        &wide_peer.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();

    // cvm2, cvm3: our endpoint.
    let mut others = Vec::new();
    for (host, key, ip) in [
        (Host::Cvm2, &keys[1], "10.0.0.3/24"),
        (Host::Cvm3, &keys[2], "10.0.0.4/24"),
    ] {
        others.push(
            EndpointProc::start(
                &lab,
                host,
                Path::new(BIN),
                key,
                &[
                    format!("--address={ip}"),
                    "--tun-name=tg0".into(),
                    peer_arg(&gw_key.public, "10.0.0.1", &["endpoint=198.18.0.1:51820"]),
                ],
            )
            .unwrap(),
        );
    }

    // Every peer reaches the gateway, and the gateway reaches every peer.
    for (host, ip) in [
        (Host::Cvm1, "10.0.0.2"),
        (Host::Cvm2, "10.0.0.3"),
        (Host::Cvm3, "10.0.0.4"),
    ] {
        assert!(
            ping(&lab, host, "10.0.0.1", 2),
            "{} cannot reach the gateway",
            host.name()
        );
        assert!(
            ping(&lab, Host::Gateway, ip, 2),
            "the gateway cannot reach {}",
            host.name()
        );
    }
    let before = gw.peer(&keys[0].public).unwrap();
    let cvm2_rx_before = counter(&others[0].peer(&gw_key.public).unwrap(), &["rx_packets"]);

    // cvm1 tries to reach cvm2 and cvm3 through the gateway: nothing arrives, the gateway counts the drops.
    assert!(
        !ping(&lab, Host::Cvm1, "10.0.0.3", 3),
        "cvm1 reached cvm2 through the gateway"
    );
    assert!(
        !ping(&lab, Host::Cvm1, "10.0.0.4", 2),
        "cvm1 reached cvm3 through the gateway"
    );
    let after = gw.peer(&keys[0].public).unwrap();
    assert_eq!(
        counter(&after, &["drops", "wrong_destination"])
            - counter(&before, &["drops", "wrong_destination"]),
        5,
        "{after}"
    );
    assert_eq!(
        counter(&others[0].peer(&gw_key.public).unwrap(), &["rx_packets"]),
        cvm2_rx_before,
        "a packet from cvm1 reached cvm2"
    );

    // cvm1 sends with cvm2's address as its source: dropped at the gateway, and counted.
    lab.run(
        Host::Cvm1,
        &["ip", "addr", "add", "10.0.0.3/32", "dev", &attacker.ifname],
    )
    .unwrap();
    assert!(
        !lab.succeeds(
            Host::Cvm1,
            &["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", "10.0.0.3", "10.0.0.1"]
        ),
        "a spoofed ping was answered"
    );
    let spoofed = gw.peer(&keys[0].public).unwrap();
    assert_eq!(
        counter(&spoofed, &["drops", "spoofed_source"]),
        3,
        "{spoofed}"
    );
    // Nothing was credited to cvm2, whose address cvm1 used.
    let cvm2_at_gw = gw.peer(&keys[1].public).unwrap();
    assert_eq!(
        counter(&cvm2_at_gw, &["drops", "spoofed_source"]),
        0,
        "{cvm2_at_gw}"
    );

    // The honest peers are undisturbed.
    assert!(ping(&lab, Host::Cvm2, "10.0.0.1", 2));
    assert!(ping(&lab, Host::Cvm3, "10.0.0.1", 2));
    for mut ep in others {
        let stats = ep.peer(&gw_key.public).unwrap();
        assert_eq!(counter(&stats, &["drops", "spoofed_source"]), 0);
        ep.stop().unwrap();
    }
    gw.stop().unwrap();
}
