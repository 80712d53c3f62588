//! Isolation at the gateway: one endpoint with three peers. Every peer reaches the gateway; no peer reaches
//! another peer through it; a packet with a spoofed source is dropped; each drop is counted. And the bad paths
//! of the handshake: a flood of initiations is answered with cookies, and a replayed handshake message (with or
//! without load) never moves a peer's endpoint.
//!
//! The attacking peer (cvm1) is `wireguard-go`, configured to route the whole tunnel subnet to the gateway
//! (an honest peer of ours would refuse to send such packets at all); cvm2 and cvm3 run our endpoint.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod tunnel;

use test_support::tunnel::{counter, gateway_peer_arg, peer_arg, ping, KeyPair, Pair, WireguardGo};
use test_support::{wait_for, Host, Lab, Scratch};
use tunnel::{endpoint, gateway_endpoint, lab_pair};

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices, wireguard-go"]
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
    let dir = Scratch::new("isolation");
    let gw_key = KeyPair::generate(&dir, "gateway").unwrap();
    let keys: Vec<KeyPair> = (1..=3)
        .map(|i| KeyPair::generate(&dir, &format!("cvm{i}")).unwrap())
        .collect();
    let mut gw = gateway_endpoint(
        &lab,
        &gw_key,
        &[
            peer_arg(&keys[0].public, "10.0.0.2", &[]),
            peer_arg(&keys[1].public, "10.0.0.3", &[]),
            peer_arg(&keys[2].public, "10.0.0.4", &[]),
        ],
    );

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
        others.push(endpoint(
            &lab,
            host,
            key,
            ip,
            &[gateway_peer_arg(&gw_key.public, &[])],
        ));
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

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices, wireguard-go"]
fn handshake_floods_get_cookies_replays_move_no_endpoint_and_peers_keep_working() {
    use boringtun::noise::{Tunn, TunnResult};
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    let (
        lab,
        dir,
        Pair {
            mut gw,
            mut cvm,
            gw_key,
            ..
        },
    ) = lab_pair("flood", "tg0", &[]);
    assert!(ping(&lab, Host::Cvm1, "10.0.0.1", 2));

    // From the root namespace's leg on the lab bridge: 400 genuine handshake initiations from a key the
    // gateway does not know, as fast as possible.
    let attacker_secret = boringtun::x25519::StaticSecret::from([0x42u8; 32]);
    let gw_public = boringtun::x25519::PublicKey::from(*gw_key.public.as_bytes());
    let mut attacker = Tunn::new(attacker_secret, gw_public, None, None, 1, None);
    let sock = UdpSocket::bind((Host::Root.addr(), 0)).unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..400 {
        if let TunnResult::WriteToNetwork(init) =
            attacker.format_handshake_initiation(&mut buf, true)
        {
            sock.send_to(init, (Host::Gateway.addr(), 51820)).unwrap();
        }
    }
    // Cookie replies (message type 3, 64 bytes) come back to the flooding address.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut cookies = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((64, _)) if buf[0] == 3 => cookies += 1,
            Ok(_) => {
                panic!("the gateway answered an unknown key with something other than a cookie")
            }
            Err(_) => break,
        }
    }
    let stats = gw.stats().unwrap();
    // The limit is 100 handshakes a second (a window may restart during the burst), and our socket's receive
    // buffer may overflow: expect at least half of the cookies the gateway sent.
    let sent = counter(&stats, &["cookie_replies"]);
    assert!(
        sent >= 150,
        "only {sent} cookie replies to 400 initiations: {stats}"
    );
    assert!(
        cookies >= sent / 2 && cookies <= sent,
        "received {cookies} of {sent} cookie replies"
    );
    // Those that came before the limit was reached were checked and found to belong to no peer.
    let checked = counter(&stats, &["unknown_peer"]);
    assert!(checked >= 50, "{stats}");
    assert_eq!(
        sent + checked,
        400,
        "every initiation is either answered with a cookie or checked: {stats}"
    );

    // A replayed handshake must not move a peer's endpoint, also under load, when the gateway answers with a
    // cookie before it can authenticate anything. The gateway reaches cvm3 through our socket A, which relays
    // both ways; we keep cvm3's genuine handshake response and replay it from socket B.
    let replay_key = KeyPair::generate(&dir, "cvm3").unwrap();
    let a = sock.local_addr().unwrap();
    gw.command(&format!(
        "add key={} ip=10.0.0.4 endpoint={a}",
        replay_key.public
    ))
    .unwrap();
    let _cvm3 = endpoint(
        &lab,
        Host::Cvm3,
        &replay_key,
        "10.0.0.4/24",
        &[peer_arg(
            &gw_key.public,
            "10.0.0.1",
            &[&format!("endpoint={a}")],
        )],
    );
    // Waiting out the flood's rate-limit window (one second) is part of the scenario: it sleeps.
    std::thread::sleep(Duration::from_millis(1100));
    let mut pinger = lab.command(Host::Gateway, "ping");
    pinger
        .args(["-c", "3", "-i", "0.2", "10.0.0.4"])
        .stdout(std::process::Stdio::null());
    let _pinger = lab.spawn(pinger).unwrap();
    let gw_addr = std::net::SocketAddr::from((Host::Gateway.addr(), 51820));
    let cvm3_addr = std::net::SocketAddr::from((Host::Cvm3.addr(), 51820));
    let mut response = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if from == gw_addr {
            sock.send_to(&buf[..n], cvm3_addr).unwrap();
        } else if from == cvm3_addr {
            if n == 92 && buf[0] == 2 && response.is_none() {
                response = Some(buf[..n].to_vec());
            }
            sock.send_to(&buf[..n], gw_addr).unwrap();
        }
        if response.is_some()
            && gw.peer(&replay_key.public).unwrap()["rx_packets"].as_u64() >= Some(2)
        {
            break;
        }
    }
    let response = response.expect("cvm3 answered the gateway's handshake");
    let sock_b = UdpSocket::bind((Host::Root.addr(), 0)).unwrap();
    let rejected_before = counter(
        &gw.peer(&replay_key.public).unwrap(),
        &["drops", "rejected"],
    );
    sock_b.send_to(&response, gw_addr).unwrap();
    let victim = wait_for(Duration::from_secs(3), "the replay rejected", || {
        let victim = gw.peer(&replay_key.public)?;
        Ok((counter(&victim, &["drops", "rejected"]) > rejected_before).then_some(victim))
    })
    .unwrap();
    assert_eq!(
        counter(&victim, &["drops", "rejected"]),
        rejected_before + 1,
        "replay not rejected: {victim}"
    );
    assert_eq!(victim["endpoint"], a.to_string(), "{victim}");
    // A fresh rate-limit window (waited out, as above), then load.
    std::thread::sleep(Duration::from_millis(1100));
    let cookies_before = counter(&gw.stats().unwrap(), &["cookie_replies"]);
    let mut flood = [0u8; 256];
    for _ in 0..150 {
        if let TunnResult::WriteToNetwork(init) =
            attacker.format_handshake_initiation(&mut flood, true)
        {
            sock_b.send_to(init, gw_addr).unwrap();
        }
    }
    for _ in 0..5 {
        sock_b.send_to(&response, gw_addr).unwrap();
    }
    // Every message has been handled once the gateway's counters stop moving (and the load was noticed).
    let mut previous = None;
    let stats = wait_for(Duration::from_secs(5), "the flood handled", || {
        let stats = gw.stats()?;
        let settled = previous.as_ref() == Some(&stats)
            && counter(&stats, &["cookie_replies"]) > cookies_before;
        previous = Some(stats.clone());
        Ok(settled.then_some(stats))
    })
    .unwrap();
    assert!(
        counter(&stats, &["cookie_replies"]) > cookies_before,
        "the gateway was not under load: {stats}"
    );
    let victim = gw.peer(&replay_key.public).unwrap();
    assert_eq!(
        victim["endpoint"],
        a.to_string(),
        "a replay under load moved the endpoint: {victim}"
    );

    // The established peer's data keeps flowing (data messages are not rate limited).
    assert!(ping(&lab, Host::Cvm1, "10.0.0.1", 3));
    assert!(ping(&lab, Host::Gateway, "10.0.0.2", 2));
    let peer = cvm.peer(&gw_key.public).unwrap();
    assert_eq!(counter(&peer, &["drops", "rejected"]), 0, "{peer}");
}
