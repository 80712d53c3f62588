//! `cvm-agent check-config` run as a program: a good file passes with a summary; each kind of bad file fails
//! with a non-zero exit and a message naming what is wrong.

use std::path::Path;
use std::process::Command;

use test_support::process::run;
use test_support::Scratch;

/// A scratch directory, removed when the test passes.
fn dir() -> Scratch {
    Scratch::new("agent-check-config")
}

/// Runs `cvm-agent check-config --config PATH`: (success, stdout and stderr).
fn check(config: &Path) -> (bool, String) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_cvm-agent"))
        .args(["check-config", "--config"])
        .arg(config)
        .env("RUST_LOG", "off"));
    (out.success(), out.text())
}

fn good(d: &Scratch) -> String {
    let policy = d.path("gateway-policy.toml");
    std::fs::write(&policy, "").unwrap();
    format!(
        r#"app_id = "deadbeef111111111111111111111111"
gateways = ["https://gw.example.com:8443", "https://198.18.0.1:8443"]
state_dir = "{state}"
[attestation]
backend = "sim-snp"
gateway_policy = "{policy}"
sim_pki = "{pki}"
sim_measurement = "{m}"
[tunnel]
handshake_timeout_secs = 60
[registration]
retry_initial_ms = 500
retry_max_ms = 8000
[[ports]]
port = 8080
target = "127.0.0.1:8080"
proxy_protocol = true
[[ports]]
port = 9000
target = "docker:web:80"
"#,
        state = d.path("state").display(),
        policy = policy.display(),
        pki = d.path("pki").display(),
        m = "aa".repeat(48),
    )
}

/// Writes `text` as the configuration and checks it fails naming each of `needles`.
fn expect_refused(d: &Scratch, what: &str, text: &str, needles: &[&str]) {
    let path = d.path("agent.toml");
    std::fs::write(&path, text).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{what}: accepted\n{out}");
    for n in needles {
        assert!(
            out.contains(n),
            "{what}: the output does not name {n:?}:\n{out}"
        );
    }
}

#[test]
fn a_good_file_passes_with_a_summary() {
    let d = dir();
    let path = d.path("agent.toml");
    std::fs::write(&path, good(&d)).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(
        out.contains("ok (app deadbeef111111111111111111111111 with 2 gateway(s) and 2 port(s), backend sim-snp)"),
        "{out}"
    );
}

#[test]
fn each_bad_file_fails_naming_the_problem() {
    let d = dir();
    let good = good(&d);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            good.replace("[tunnel]", "[tunnel]\nhandshake_timeuot_secs = 5"),
            vec!["unknown field", "handshake_timeuot_secs"],
        ),
        (
            "unknown section",
            format!("{good}[bogus]\nx = 1\n"),
            vec!["unknown field", "bogus"],
        ),
        (
            "bad target",
            good.replace("docker:web:80", "docker:web"),
            vec!["problem(s)", "port 9000 target \"docker:web\""],
        ),
        (
            "plain-HTTP gateway URL",
            good.replace("https://gw.example.com:8443", "http://gw.example.com:8443"),
            vec![
                "gateways: \"http://gw.example.com:8443\"",
                "must start with https://",
            ],
        ),
        (
            "gateway URL without a host",
            good.replace("https://gw.example.com:8443", "https://:8443"),
            vec!["gateways: \"https://:8443\": has no host"],
        ),
        (
            "gateway URL port out of range",
            good.replace(
                "https://gw.example.com:8443",
                "https://gw.example.com:99999",
            ),
            vec!["gateways: \"https://gw.example.com:99999\": has an invalid port"],
        ),
        (
            "no gateway",
            good.replace(
                "[\"https://gw.example.com:8443\", \"https://198.18.0.1:8443\"]",
                "[]",
            ),
            vec!["at least one gateway control URL"],
        ),
        (
            "port out of range",
            good.replace("port = 8080", "port = 70000"),
            vec!["70000", "u16"],
        ),
        (
            "port 0",
            good.replace("port = 8080", "port = 0"),
            vec!["port 0 is not a valid port"],
        ),
        (
            "duplicate port",
            good.replace("port = 9000", "port = 8080"),
            vec!["port 8080 is declared more than once"],
        ),
        (
            "missing app id",
            good.replace("app_id = \"deadbeef111111111111111111111111\"\n", ""),
            vec!["missing field", "app_id"],
        ),
        (
            "app id not hex",
            good.replace("deadbeef111111111111111111111111", "not-an-app-id"),
            vec!["app_id"],
        ),
        (
            "sim backend without a PKI",
            good.replace(&format!("sim_pki = \"{}\"\n", d.path("pki").display()), ""),
            vec!["attestation.sim_pki is required with a sim-* backend"],
        ),
        (
            "unknown backend",
            good.replace("backend = \"sim-snp\"", "backend = \"sgx\""),
            vec!["sgx", "sim-snp"],
        ),
        (
            "bad simulated measurement",
            good.replace(&"aa".repeat(48), "aabb"),
            vec!["attestation.sim_measurement must be 96 hex characters, got \"aabb\""],
        ),
        (
            "missing gateway policy",
            good.replace("gateway-policy.toml", "missing-policy.toml"),
            vec![
                "attestation.gateway_policy",
                "missing-policy.toml",
                "not a readable file",
            ],
        ),
        (
            "handshake timeout below the minimum",
            good.replace("handshake_timeout_secs = 60", "handshake_timeout_secs = 3"),
            vec!["tunnel.handshake_timeout_secs = 3 is below 10"],
        ),
        (
            "certificate validity below the minimum",
            good.replace("sim_pki =", "certificate_validity_secs = 5\nsim_pki ="),
            vec!["attestation.certificate_validity_secs = 5 is below 60"],
        ),
        (
            "retry delays reversed",
            good.replace("retry_max_ms = 8000", "retry_max_ms = 100"),
            vec!["retry_initial_ms must be positive and at most retry_max_ms"],
        ),
        ("not TOML", "app_id = [".to_string(), vec!["agent.toml"]),
    ];
    for (what, text, needles) in &cases {
        expect_refused(&d, what, text, needles);
    }

    // Several problems at once: every one is listed, one per line.
    let many = good
        .replace("port = 9000", "port = 0")
        .replace("https://gw.example.com:8443", "ftp://gw.example.com")
        .replace("handshake_timeout_secs = 60", "handshake_timeout_secs = 1");
    expect_refused(
        &d,
        "several problems",
        &many,
        &[
            "3 problem(s):",
            "\n  - gateways: \"ftp://gw.example.com\"",
            "\n  - tunnel.handshake_timeout_secs = 1 is below 10",
            "\n  - ports: port 0 is not a valid port",
        ],
    );

    let (ok, out) = check(&d.path("absent.toml"));
    assert!(!ok);
    assert!(
        out.contains("cannot read") && out.contains("absent.toml"),
        "{out}"
    );
}
