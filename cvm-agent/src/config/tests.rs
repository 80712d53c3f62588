//! Tests of reading `agent.toml` and turning it into an [`AgentConfig`].

use super::*;

#[test]
fn parses_defaults_and_refuses_unknown_keys() {
    let text = r#"
app_id = "DEADBEEF111111111111111111111111"
gateways = ["https://198.18.0.2:8443"]
state_dir = "/tmp/x"
[attestation]
gateway_policy = "/nonexistent"
[[ports]]
port = 8080
target = "127.0.0.1:8080"
"#;
    let c = ConfigFile::parse(text).unwrap();
    assert_eq!(c.app_id.as_str(), "deadbeef111111111111111111111111");
    assert_eq!(c.tunnel.handshake_timeout_secs, 180);
    assert_eq!(
        c.docker.socket,
        PathBuf::from(crate::docker::DEFAULT_SOCKET)
    );
    assert_eq!(c.registration.retry_max(), Duration::from_secs(60));
    assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
    assert!(c.problems()[0].contains("gateway_policy"));
    let e = ConfigFile::parse(&text.replace("[attestation]", "[attestation]\nbakend = \"tdx\""))
        .unwrap_err();
    assert!(e.to_string().contains("bakend"), "{e}");
    assert!(ConfigFile::parse(&text.replace("DEADBEEF", "nothex!!")).is_err());
    let c = ConfigFile::parse(&format!("{text}[docker]\nsocket = \"/run/docker.sock\"\n")).unwrap();
    assert_eq!(c.docker.socket, PathBuf::from("/run/docker.sock"));
    assert!(ConfigFile::parse(&format!("{text}[docker]\nsock = \"/x\"\n")).is_err());
    assert_eq!(c.forwarding.probe_interval(), Duration::from_secs(2));
    let c = ConfigFile::parse(&format!("{text}[forwarding]\nprobe_interval_ms = 500\n")).unwrap();
    assert_eq!(c.forwarding.probe_interval(), Duration::from_millis(500));
    assert!(ConfigFile::parse(&format!("{text}[forwarding]\nprobe_interval = 500\n")).is_err());
}

#[test]
fn lists_every_problem() {
    let text = r#"
app_id = "deadbeef"
gateways = ["http://plain:80", "https://ok.example:8443"]
state_dir = ""
[attestation]
backend = "sim-snp"
gateway_policy = "/nonexistent"
tdx_collateral_dir = "/nonexistent/tdx-collateral"
[tunnel]
mtu = 10
[[ports]]
port = 80
target = ""
[[ports]]
port = 80
target = "x:1"
[[ports]]
port = 81
target = "docker:web"
[docker]
socket = ""
[forwarding]
probe_interval_ms = 99
"#;
    let p = ConfigFile::parse(text).unwrap().problems().join("\n");
    let missing: Vec<&str> = [
        "http://plain",
        "state_dir",
        "sim_pki",
        "tdx_collateral_dir: /nonexistent/tdx-collateral is not a directory",
        "mtu",
        "more than once",
        "empty target",
        "port 81 target \"docker:web\"",
        "docker.socket",
        "forwarding.probe_interval_ms = 99 is below 100",
    ]
    .into_iter()
    .filter(|needle| !p.contains(needle))
    .collect();
    assert!(missing.is_empty(), "missing {missing:?}:\n{p}");
    assert!(!p.contains("ok.example"), "{p}");
}

/// A file whose only problem is the given `[tunnel]` section (the policy file exists).
fn with_tunnel(dir: &Path, tunnel: &str) -> ConfigFile {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "").unwrap();
    ConfigFile::parse(&format!(
        r#"
app_id = "deadbeef111111111111111111111111"
gateways = ["https://198.18.0.2:8443"]
state_dir = "/tmp/x"
[attestation]
gateway_policy = "{}"
[tunnel]
{tunnel}
[[ports]]
port = 8080
target = "docker-label"
proxy_protocol = true
"#,
        policy.display()
    ))
    .unwrap()
}

#[test]
fn converts_into_domain_types() {
    let dir = tempfile::tempdir().unwrap();
    let c = with_tunnel(dir.path(), "interface = \"wg-a\"\nmtu = 1400")
        .into_config()
        .unwrap();
    assert_eq!(c.gateways[0].port, 8443);
    assert_eq!(c.tunnel.interface.as_str(), "wg-a");
    assert_eq!(c.tunnel.mtu.get(), 1400);
    assert_eq!(c.tunnel.handshake_timeout, Duration::from_secs(180));
    assert_eq!(
        c.ports,
        vec![PortRule {
            port: 8080,
            target: crate::target::Target::DockerLabel,
            proxy_protocol: true
        }]
    );
}

#[test]
fn an_mtu_the_endpoint_refuses_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    for mtu in [4000u16, 9000, 1279] {
        let p = with_tunnel(dir.path(), &format!("mtu = {mtu}")).problems();
        assert_eq!(
            p,
            vec![format!("tunnel.mtu = {mtu} is outside 1280..=2000")],
            "{mtu}"
        );
    }
    let p = with_tunnel(dir.path(), "interface = \"a/b\"").problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("tunnel.interface \"a/b\" is not a valid interface name"),
        "{p:?}"
    );
}

#[test]
fn a_target_outside_the_grammar_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = with_tunnel(dir.path(), "").ports;
    let mut bad = with_tunnel(dir.path(), "");
    bad.ports = vec![PortConfig {
        port: 80,
        target: "docker:web".into(),
        proxy_protocol: false,
    }];
    assert_eq!(file.len(), 1);
    let p = bad.problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("ports: port 80 target \"docker:web\": "),
        "{p:?}"
    );
    assert!(p[0].ends_with("expected `docker:SERVICE:PORT`"), "{p:?}");
}
