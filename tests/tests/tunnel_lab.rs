//! The lab itself: every host reaches every other by name, and tearing down removes everything.

use std::path::Path;

use test_support::{Host, Lab};

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn lab_hosts_resolve_and_reach_each_other_and_down_removes_everything() {
    let lab = Lab::up().unwrap();
    for from in Host::NAMESPACED {
        for to in Host::NAMESPACED.into_iter().chain([Host::Root]) {
            if from == to {
                continue;
            }
            let out = lab
                .run(from, &["ping", "-c1", "-W2", "-q", to.name()])
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&to.addr().to_string()),
                "{} resolved {} to the wrong address: {text}",
                from.name(),
                to.name()
            );
        }
    }
    // The namespaces are isolated from the root namespace's other networks: no default route anywhere.
    let routes = lab.run(Host::Cvm1, &["ip", "route"]).unwrap();
    assert!(!String::from_utf8_lossy(&routes.stdout).contains("default"));

    // A process left running inside a host does not keep the lab alive.
    let mut cmd = lab.command(Host::Cvm2, "sleep");
    cmd.arg("60");
    let sleeper = lab.spawn(cmd).unwrap();
    lab.down_now().unwrap();
    for host in Host::NAMESPACED {
        assert!(!Path::new("/run/netns").join(host.name()).exists());
        assert!(!Path::new("/etc/netns").join(host.name()).exists());
    }
    assert!(!Path::new("/sys/class/net/tgwlab0").exists());
    drop(sleeper);
}
