//! What a CVM reaches of the gateway through its tunnel: nothing but answers to the gateway's own connections.
//!
//! A real `gateway run` whose control, client and admin listeners listen on every address (`0.0.0.0`, as in
//! production), plus two other services of the gateway's host (a TCP server on a fixed port and one in the
//! kernel's ephemeral port range, and a UDP server). The CVM is a registered instance whose tunnel is
//! `wireguard-go` in cvm1: a CVM under its owner's control, with no port filter of its own in the way. From
//! inside cvm1, connecting to any of them on the gateway's tunnel address fails (the SYN is dropped: a timeout),
//! no UDP datagram arrives and the gateway does not answer pings; the same services answer on the gateway's host
//! itself. Meanwhile the gateway still reaches the CVM's forwarded port and pings it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod registration;

use std::time::Duration;

use cvm_agent::client::register_once;
use protocol::control::InstanceId;
use registration::*;
use test_support::tunnel::{ping, KeyPair, WireguardGo};
use test_support::{clients, wait_for, Host, Scratch};

/// The gateway's address inside the tunnel.
const GATEWAY_TUNNEL: &str = "10.0.0.1";
/// The lab gateway's client and admin listeners in this test.
const CLIENT_PORT: u16 = 9443;
const ADMIN_PORT: u16 = 9446;
/// Other services of the gateway's host: TCP on a fixed port and in the ephemeral range, and UDP.
const HOST_TCP: u16 = 7100;
const HOST_TCP_EPHEMERAL: u16 = 45000;
const HOST_UDP: u16 = 5300;

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices, wireguard-go"]
fn a_cvm_reaches_no_listener_of_the_gateway_host_and_the_gateway_still_reaches_it() {
    let (lab, world) = World::in_lab("tunnel-inbound");
    let _logs = world.logs_on_failure(&["gateway"]);
    let gw = Host::Gateway.addr().to_string();

    // The gateway with every listener on the wildcard address.
    let token = world.dir().join("admin-token");
    std::fs::write(&token, "inbound-test-token-0123456789").unwrap();
    let config = GatewayConfig {
        proxy_port: CLIENT_PORT,
        proxy_extra: format!(
            "\n[proxy.admin]\nlisten = \"0.0.0.0:{ADMIN_PORT}\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
        ..rare_reregistration()
    };
    let text = config
        .render(world.dir())
        .replace(
            &format!("\"{gw}:{CONTROL_PORT}\""),
            &format!("\"0.0.0.0:{CONTROL_PORT}\""),
        )
        .replace(
            &format!("\"{gw}:{CLIENT_PORT}\""),
            &format!("\"0.0.0.0:{CLIENT_PORT}\""),
        );
    assert!(
        text.contains("\"0.0.0.0:8443\"") && text.contains("\"0.0.0.0:9443\""),
        "{text}"
    );
    let path = world.dir().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let _gateway = world
        .start(&lab, Host::Gateway, "gateway", "gateway", &path)
        .unwrap();

    // Other services of the gateway's host, on every address.
    let tcp_server = |port: u16| {
        clients::start_line_server_on(
            &lab,
            Host::Gateway,
            "0.0.0.0",
            port,
            &format!("host-{port}"),
        )
        .unwrap()
    };
    let _host_tcp = tcp_server(HOST_TCP);
    let _host_ephemeral = tcp_server(HOST_TCP_EPHEMERAL);
    let received = world.dir().join("udp-received");
    let udp_server = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{HOST_UDP}))\n\
         while True:\n  d,a=s.recvfrom(2048)\n  open('{}','a').write(a[0]+' '+d.decode(errors='replace')+'\\n')\n",
        received.display()
    );
    let _host_udp = clients::spawn_python(&lab, Host::Gateway, &udp_server).unwrap();

    // Register an instance with a key of our own, and bring its tunnel up with wireguard-go in cvm1.
    let dir = Scratch::new("tunnel-inbound-keys");
    let key = KeyPair::generate(&dir, "cvm1").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = wait_for(
        Duration::from_secs(20),
        "the gateway registers the instance",
        || {
            Ok(rt
                .block_on(register_once(
                    &control_url(),
                    client_tls(&world),
                    &register_request(&InstanceId::random(), key.public),
                    Duration::from_secs(5),
                    |_| {},
                ))
                .ok())
        },
    )
    .unwrap();
    let addr = answer.tunnel_address.to_string();
    let wg = WireguardGo::start(&lab, Host::Cvm1, &key, 51820, &format!("{addr}/8")).unwrap();
    let peer = [
        "wg",
        "set",
        &wg.ifname,
        "peer",
        &answer.gateway.public_key.to_string(),
        "endpoint",
        &answer.gateway.endpoint,
        "allowed-ips",
        "10.0.0.1/32",
        "persistent-keepalive",
        "1",
    ];
    lab.run(Host::Cvm1, &peer).unwrap();
    // The CVM's forwarded port: a server on every address of cvm1.
    let _forwarded =
        clients::start_line_server_on(&lab, Host::Cvm1, "0.0.0.0", FORWARDED, "from-cvm").unwrap();

    // The gateway reaches the CVM: ping (echo replies come back) and a connection to its forwarded port.
    wait_for(Duration::from_secs(20), "the gateway pings the CVM", || {
        Ok(ping(&lab, Host::Gateway, &addr, 1).then_some(()))
    })
    .unwrap();
    let reached = wait_for(
        Duration::from_secs(10),
        "the gateway reaches the CVM's port",
        || Ok(clients::fetch_line(&lab, Host::Gateway, &addr, FORWARDED).ok()),
    )
    .unwrap();
    assert_eq!(reached, "from-cvm");

    // The services answer on the gateway's host itself, on the tunnel address too.
    for port in [
        CONTROL_PORT,
        CLIENT_PORT,
        ADMIN_PORT,
        HOST_TCP,
        HOST_TCP_EPHEMERAL,
    ] {
        let (outcome, _) =
            clients::connect_outcome(&lab, Host::Gateway, GATEWAY_TUNNEL, port).unwrap();
        assert_eq!(outcome, "connected", "port {port} on the gateway's host");
    }

    // From inside the CVM nothing of the gateway's host is reachable: every attempt times out (the SYN is
    // dropped, no reset either), all at once.
    let outcomes: Vec<(u16, String)> = std::thread::scope(|s| {
        let attempts: Vec<_> = [
            CONTROL_PORT,
            CLIENT_PORT,
            ADMIN_PORT,
            HOST_TCP,
            HOST_TCP_EPHEMERAL,
            22,
        ]
        .into_iter()
        .map(|port| {
            let lab = &lab;
            s.spawn(move || {
                let (outcome, _) =
                    clients::connect_outcome(lab, Host::Cvm1, GATEWAY_TUNNEL, port).unwrap();
                (port, outcome)
            })
        })
        .collect();
        attempts.into_iter().map(|a| a.join().unwrap()).collect()
    });
    for (port, outcome) in &outcomes {
        assert_eq!(
            outcome, "TimeoutError",
            "port {port} of the gateway from inside the CVM: {outcomes:?}"
        );
    }
    // UDP: datagrams from the CVM never arrive; the same from the gateway's host does.
    let send_udp = |host: Host, text: &str| {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             [s.sendto(b'{text}',('{GATEWAY_TUNNEL}',{HOST_UDP})) for _ in range(5)]\n"
        );
        lab.run(host, &["python3", "-c", &script]).unwrap();
    };
    send_udp(Host::Cvm1, "from-cvm");
    send_udp(Host::Gateway, "from-host");
    std::thread::sleep(Duration::from_millis(500));
    let got = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(got.contains("from-host"), "the UDP server works: {got:?}");
    assert!(
        !got.contains("from-cvm"),
        "UDP from the CVM arrived: {got:?}"
    );
    // Echo requests from the CVM go unanswered.
    assert!(
        !ping(&lab, Host::Cvm1, GATEWAY_TUNNEL, 2),
        "the gateway answers pings from the CVM"
    );
    // And the gateway still reaches the CVM after all that.
    assert_eq!(
        clients::fetch_line(&lab, Host::Gateway, &addr, FORWARDED).unwrap(),
        "from-cvm"
    );
    assert!(ping(&lab, Host::Gateway, &addr, 1));
    drop(wg);
}
