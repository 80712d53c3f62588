//! Our endpoint to our endpoint across the lab: handshake, ping, a 100 MB TCP transfer with matching hashes,
//! and the counters and health that the registry reads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod tunnel;

use std::time::Duration;

use test_support::tunnel::{
    counter, gateway_peer_arg, peer_arg, ping, tcp_transfer, EndpointProc, KeyPair, Pair,
};
use test_support::{wait_for, Host, Lab, Scratch};
use tunnel::{endpoint, gateway_endpoint, keys, lab_pair};

/// The current Unix time in milliseconds, as the endpoint reports times.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn ours_to_ours_ping_and_100_mb_transfer() {
    let (
        lab,
        _dir,
        Pair {
            mut gw,
            mut cvm,
            gw_key,
            cvm_key,
        },
    ) = lab_pair("tunnel", "tg0", &[]);

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

    let now_ms = now_ms();
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

/// A CVM of these tests: in `host` with `key` and tunnel address `ip` (a /24), its peer the gateway (with `extra`
/// peer fields), its endpoint started with more `flags`.
struct Cvm<'a> {
    host: Host,
    key: &'a KeyPair,
    ip: &'a str,
    extra: &'a [&'a str],
    flags: &'a [&'a str],
}

impl<'a> Cvm<'a> {
    /// A CVM without extra peer fields or flags.
    fn plain(host: Host, key: &'a KeyPair, ip: &'a str) -> Self {
        Cvm {
            host,
            key,
            ip,
            extra: &[],
            flags: &[],
        }
    }

    /// Starts its endpoint, whose peer is the gateway with key `gw`.
    fn start(&self, lab: &Lab, gw: &KeyPair) -> EndpointProc {
        let mut args = vec![gateway_peer_arg(&gw.public, self.extra)];
        args.extend(self.flags.iter().map(|f| f.to_string()));
        endpoint(lab, self.host, self.key, &format!("{}/24", self.ip), &args)
    }
}

/// The gateway's endpoint with `flags` and a peer for each of `cvms`, then each CVM's endpoint.
fn gateway_and_cvms(
    lab: &Lab,
    gw: &KeyPair,
    flags: &[&str],
    cvms: &[Cvm],
) -> (EndpointProc, Vec<EndpointProc>) {
    let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    args.extend(cvms.iter().map(|c| peer_arg(&c.key.public, c.ip, &[])));
    let gateway = gateway_endpoint(lab, gw, &args);
    (gateway, cvms.iter().map(|c| c.start(lab, gw)).collect())
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn a_removed_peer_cannot_send_and_a_peer_re_added_with_a_new_key_works() {
    let lab = Lab::up().unwrap();
    let dir = Scratch::new("readd");
    let [gw_key, old_key, new_key, other_key] = keys(&dir, ["gateway", "old", "new", "other"]);
    let (mut gw, _old_and_other) = gateway_and_cvms(
        &lab,
        &gw_key,
        &[],
        &[
            Cvm::plain(Host::Cvm1, &old_key, "10.0.0.2"),
            Cvm::plain(Host::Cvm3, &other_key, "10.0.0.3"),
        ],
    );
    assert!(ping(&lab, Host::Cvm1, "10.0.0.1", 2));
    assert!(ping(&lab, Host::Cvm3, "10.0.0.1", 2));

    // Removal answers with the peer's final counters, and the peer's live session ends with it.
    let removed = gw.command(&format!("remove {}", old_key.public)).unwrap();
    assert!(
        counter(&removed["stats"], &["rx_packets"]) >= 2,
        "{removed}"
    );
    let unknown_before = counter(&gw.stats().unwrap(), &["unknown_peer"]);
    assert!(
        !ping(&lab, Host::Cvm1, "10.0.0.1", 2),
        "a removed peer still reaches the gateway"
    );
    let unknown_after = counter(&gw.stats().unwrap(), &["unknown_peer"]);
    assert!(
        unknown_after >= unknown_before + 2,
        "{unknown_before} -> {unknown_after}"
    );
    // Removing it again is an error, and the other peer did not notice any of this.
    assert!(gw.command(&format!("remove {}", old_key.public)).is_err());
    assert!(ping(&lab, Host::Cvm3, "10.0.0.1", 2));

    // The same address under a new key (a re-installed CVM in cvm2) works; the old key still does not.
    gw.command(&format!("add key={} ip=10.0.0.2", new_key.public))
        .unwrap();
    let _new = Cvm::plain(Host::Cvm2, &new_key, "10.0.0.2").start(&lab, &gw_key);
    assert!(
        ping(&lab, Host::Cvm2, "10.0.0.1", 3),
        "the re-added peer cannot reach the gateway"
    );
    assert!(ping(&lab, Host::Gateway, "10.0.0.2", 2));
    assert_eq!(
        gw.peer(&new_key.public).unwrap()["endpoint"],
        "198.18.0.12:51820"
    );
    assert!(
        !ping(&lab, Host::Cvm1, "10.0.0.1", 1),
        "the removed key works again"
    );

    // Updating a peer (here its keep-alive) keeps its session; moving it onto another peer's address fails.
    let before = gw.peer(&new_key.public).unwrap();
    gw.command(&format!(
        "update key={} ip=10.0.0.2 keepalive-ms=1000",
        new_key.public
    ))
    .unwrap();
    let after = gw.peer(&new_key.public).unwrap();
    assert_eq!(after["persistent_keepalive_ms"], 1000);
    assert_eq!(after["last_handshake_ms"], before["last_handshake_ms"]);
    assert!(gw
        .command(&format!("update key={} ip=10.0.0.3", new_key.public))
        .is_err());
    assert!(gw
        .command(&format!("update key={} ip=10.0.0.9", old_key.public))
        .is_err());
    assert!(ping(&lab, Host::Cvm2, "10.0.0.1", 1));

    // An address cannot be given to two peers, nor a key added twice.
    let err = gw
        .command(&format!("add key={} ip=10.0.0.2", old_key.public))
        .unwrap_err();
    assert!(err.to_string().contains("already belongs"), "{err}");
    assert!(gw
        .command(&format!("add key={} ip=10.0.0.9", new_key.public))
        .is_err());
    assert!(gw.command("add key=garbage ip=10.0.0.9").is_err());
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn keep_alive_holds_an_idle_tunnel_healthy_and_its_absence_does_not() {
    // Shortened timers: health window 3 s; cvm1 sends keep-alives every 400 ms and renews its idle session
    // after 1.5 s (defaults: 300 s window, 25 s keep-alive, 120 s renewal). cvm2 has no keep-alive.
    let lab = Lab::up().unwrap();
    let dir = Scratch::new("health");
    let [gw_key, ka_key, idle_key] = keys(&dir, ["gateway", "keepalive", "idle"]);
    let rekey = &["--rekey-after-ms=1500"];
    let (mut gw, _ka_and_idle) = gateway_and_cvms(
        &lab,
        &gw_key,
        &["--health-window-ms=3000"],
        &[
            Cvm {
                extra: &["keepalive-ms=400"],
                flags: rekey,
                ..Cvm::plain(Host::Cvm1, &ka_key, "10.0.0.2")
            },
            Cvm {
                flags: rekey,
                ..Cvm::plain(Host::Cvm2, &idle_key, "10.0.0.3")
            },
        ],
    );
    // The keep-alive alone brings cvm1's tunnel up; cvm2's comes up with a ping.
    assert!(ping(&lab, Host::Cvm2, "10.0.0.1", 1));
    let first = wait_for(Duration::from_secs(3), "cvm1's first handshake", || {
        Ok(gw.peer(&ka_key.public)?["last_handshake_ms"].as_u64())
    })
    .unwrap();
    let idle_first = counter(&gw.peer(&idle_key.public).unwrap(), &["last_handshake_ms"]);
    assert_eq!(gw.peer(&ka_key.public).unwrap()["healthy"], true);
    assert_eq!(gw.peer(&idle_key.public).unwrap()["healthy"], true);

    // Twice the health window with no traffic at all: the quiet spell is what this test checks, so it sleeps.
    std::thread::sleep(Duration::from_secs(6));
    let ka = gw.peer(&ka_key.public).unwrap();
    let idle = gw.peer(&idle_key.public).unwrap();
    assert_eq!(
        ka["healthy"], true,
        "the keep-alive peer fell out of the health window: {ka}"
    );
    assert!(
        counter(&ka, &["last_handshake_ms"]) >= first + 3000,
        "the keep-alive peer's handshake was not renewed: first {first}, now {ka}"
    );
    assert!(
        now_ms() - counter(&ka, &["last_authenticated_ms"]) < 1500,
        "no recent keep-alive: {ka}"
    );
    assert_eq!(
        idle["healthy"], false,
        "an idle peer without keep-alive stayed healthy: {idle}"
    );
    assert_eq!(counter(&idle, &["last_handshake_ms"]), idle_first, "{idle}");
    // Its session itself is still valid (WireGuard keeps one for up to 180 s): traffic still flows.
    assert!(ping(&lab, Host::Cvm2, "10.0.0.1", 1));
}

#[test]
fn the_default_renewal_keeps_a_keep_alive_peer_inside_the_default_health_window() {
    // An idle keep-alive peer renews its session every DEFAULT_REKEY_AFTER; the handshake itself may need
    // retries (5 s each, WireGuard's REKEY_TIMEOUT) plus one keep-alive interval (25 s at the agent).
    let worst_case = protocol::tunnel::DEFAULT_REKEY_AFTER + Duration::from_secs(3 * 5 + 25);
    assert!(worst_case < protocol::tunnel::DEFAULT_HEALTH_WINDOW);
}
