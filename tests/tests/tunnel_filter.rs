//! The endpoint's inbound filter across the lab: cvm1's endpoint lets in only its declared TCP ports (and ICMP
//! echo); wildcard listeners on other ports in cvm1 are refused at once with a reset crafted by the endpoint,
//! other packets are dropped, and both are counted. The filter can be changed while the tunnel runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod tunnel;

use std::process::Stdio;
use std::time::Duration;

use test_support::clients::connect_outcome;
use test_support::tunnel::{counter, ping, Pair};
use test_support::{wait_for, Host, Lab};
use tunnel::lab_pair;

/// Connects from `host` to `addr:port`; returns the outcome (`connected`, `ConnectionRefusedError`,
/// `TimeoutError`, ...) and the seconds the attempt took.
fn connect(lab: &Lab, host: Host, addr: &str, port: u16) -> (String, f64) {
    connect_outcome(lab, host, addr, port).unwrap()
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn inbound_filter_resets_undeclared_ports_drops_the_rest_and_counts() {
    let (lab, _dir, pair) = lab_pair("filter", "tgf0", &["--inbound-tcp-ports=5001".into()]);
    let Pair {
        gw: _gw,
        mut cvm,
        gw_key,
        ..
    } = pair;

    // Services of cvm1 listening on every address, 5001 declared, 5002 not.
    let script = "import socket,select\nss=[]\nfor p in (5001,5002):\n  s=socket.socket()\n  \
                  s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n  s.bind(('0.0.0.0',p))\n  s.listen(16)\n  \
                  ss.append(s)\nwhile True:\n  r,_,_=select.select(ss,[],[])\n  for s in r:\n    c,_=s.accept()\n    c.close()\n";
    let mut listener = lab.command(Host::Cvm1, "python3");
    listener
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _listener = lab.spawn(listener).unwrap();
    wait_for(Duration::from_secs(10), "the listeners in cvm1", || {
        Ok((connect(&lab, Host::Cvm1, "10.0.0.2", 5002).0 == "connected").then_some(()))
    })
    .unwrap();

    // ICMP echo is let in: replies to cvm1's pings (which bring the tunnel up), and the gateway's pings.
    assert!(ping(&lab, Host::Cvm1, "10.0.0.1", 3), "ping from cvm1");
    assert!(
        ping(&lab, Host::Gateway, "10.0.0.2", 3),
        "ping through the filter"
    );
    let (outcome, _) = connect(&lab, Host::Gateway, "10.0.0.2", 5001);
    assert_eq!(outcome, "connected", "declared port 5001");
    let (outcome, took) = connect(&lab, Host::Gateway, "10.0.0.2", 5002);
    assert_eq!(outcome, "ConnectionRefusedError", "undeclared port 5002");
    assert!(took < 0.5, "the refusal took {took} s");
    // UDP is dropped, silently.
    let udp =
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(3):\n  \
               s.sendto(b'x',('10.0.0.2',5003))\n";
    lab.run(Host::Gateway, &["python3", "-c", udp]).unwrap();
    let stats = wait_for(Duration::from_secs(5), "the drops counted", || {
        let peer = cvm.peer(&gw_key.public)?;
        Ok((counter(&peer, &["drops", "filtered"]) >= 3).then_some(peer))
    })
    .unwrap();
    assert_eq!(counter(&stats, &["drops", "refused"]), 1, "{stats}");
    assert_eq!(counter(&stats, &["drops", "spoofed_source"]), 0, "{stats}");

    // The filter changes while the tunnel runs.
    assert_eq!(cvm.command("filter 5002").unwrap()["ok"], true);
    assert_eq!(
        connect(&lab, Host::Gateway, "10.0.0.2", 5002).0,
        "connected"
    );
    assert_eq!(
        connect(&lab, Host::Gateway, "10.0.0.2", 5001).0,
        "ConnectionRefusedError"
    );
    assert_eq!(cvm.command("filter none").unwrap()["ok"], true);
    for port in [5001, 5002] {
        assert_eq!(
            connect(&lab, Host::Gateway, "10.0.0.2", port).0,
            "connected"
        );
    }
    let stats = cvm.peer(&gw_key.public).unwrap();
    assert_eq!(counter(&stats, &["drops", "refused"]), 2, "{stats}");
}
