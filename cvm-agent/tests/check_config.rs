//! `cvm-agent check-config` run as a program: a good file passes with a summary; each kind of bad file (an MTU
//! the tunnel would refuse included) fails with a non-zero exit and a message naming what is wrong.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

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
    let pki_line = format!("sim_pki = \"{}\"\n", d.path("pki").display());
    let both_gateways = "[\"https://gw.example.com:8443\", \"https://198.18.0.1:8443\"]";
    // (what, text replaced in the good file, its replacement, what the output must name)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "unknown key",
            "[tunnel]",
            "[tunnel]\nhandshake_timeuot_secs = 5",
            &["unknown field", "handshake_timeuot_secs"],
        ),
        (
            "bad target",
            "docker:web:80",
            "docker:web",
            &["problem(s)", "port 9000 target \"docker:web\""],
        ),
        (
            "plain-HTTP gateway URL",
            "https://gw.example.com:8443",
            "http://gw.example.com:8443",
            &[
                "gateways: \"http://gw.example.com:8443\"",
                "must start with https://",
            ],
        ),
        (
            "gateway URL without a host",
            "https://gw.example.com:8443",
            "https://:8443",
            &["gateways: \"https://:8443\": has no host"],
        ),
        (
            "gateway URL port out of range",
            "https://gw.example.com:8443",
            "https://gw.example.com:99999",
            &["gateways: \"https://gw.example.com:99999\": has an invalid port"],
        ),
        (
            "no gateway",
            both_gateways,
            "[]",
            &["at least one gateway control URL"],
        ),
        (
            "port out of range",
            "port = 8080",
            "port = 70000",
            &["70000", "u16"],
        ),
        (
            "port 0",
            "port = 8080",
            "port = 0",
            &["port 0 is not a valid port"],
        ),
        (
            "duplicate port",
            "port = 9000",
            "port = 8080",
            &["port 8080 is declared more than once"],
        ),
        (
            "missing app id",
            "app_id = \"deadbeef111111111111111111111111\"\n",
            "",
            &["missing field", "app_id"],
        ),
        (
            "app id not hex",
            "deadbeef111111111111111111111111",
            "not-an-app-id",
            &["app_id"],
        ),
        (
            "sim backend without a PKI",
            &pki_line,
            "",
            &["attestation.sim_pki is required with a sim-* backend"],
        ),
        (
            "unknown backend",
            "backend = \"sim-snp\"",
            "backend = \"sgx\"",
            &["sgx", "sim-snp"],
        ),
        (
            "bad simulated measurement",
            &"aa".repeat(48),
            "aabb",
            &["attestation.sim_measurement must be 96 hex characters, got \"aabb\""],
        ),
        (
            "missing gateway policy",
            "gateway-policy.toml",
            "missing-policy.toml",
            &[
                "attestation.gateway_policy",
                "missing-policy.toml",
                "not a readable file",
            ],
        ),
        (
            "handshake timeout below the minimum",
            "handshake_timeout_secs = 60",
            "handshake_timeout_secs = 3",
            &["tunnel.handshake_timeout_secs = 3 is below 10"],
        ),
        (
            "certificate validity below the minimum",
            "sim_pki =",
            "certificate_validity_secs = 5\nsim_pki =",
            &["attestation.certificate_validity_secs = 5 is below 60"],
        ),
        (
            "retry delays reversed",
            "retry_max_ms = 8000",
            "retry_max_ms = 100",
            &["retry_initial_ms must be positive and at most retry_max_ms"],
        ),
    ];
    for (what, from, to, needles) in cases {
        assert!(good.contains(from), "{what}: the good file has no {from:?}");
        expect_refused(&d, what, &good.replace(from, to), needles);
    }
    expect_refused(
        &d,
        "unknown section",
        &format!("{good}[bogus]\nx = 1\n"),
        &["unknown field", "bogus"],
    );
    expect_refused(&d, "not TOML", "app_id = [", &["agent.toml"]);

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

#[test]
fn an_mtu_the_tunnel_cannot_use_is_refused_by_check_config() {
    let d = dir();
    let path = d.path("agent.toml");
    let good = good(&d);
    let check_mtu = |mtu: u16| {
        let text = good.replace("[tunnel]", &format!("[tunnel]\nmtu = {mtu}"));
        std::fs::write(&path, text).unwrap();
        check(&path)
    };
    for mtu in [4000, 9000, 2001, 1279] {
        let (ok, out) = check_mtu(mtu);
        assert!(!ok, "mtu {mtu} accepted:\n{out}");
        assert!(
            out.contains(&format!("tunnel.mtu = {mtu} is outside 1280..=2000")),
            "mtu {mtu}:\n{out}"
        );
    }
    for mtu in [1280, 1420, 2000] {
        let (ok, out) = check_mtu(mtu);
        assert!(ok, "mtu {mtu} refused:\n{out}");
    }
    // The upper bound is the tunnel endpoint's own.
    assert_eq!(*protocol::tunnel::MTU_RANGE.end(), 2000);
}

/// `check-config` parses the gateway policy as `run` would: a TDX profile pinning only MRTD (any kernel on that
/// firmware would pass as the gateway) is refused, naming the file, the missing registers and what to write.
#[test]
fn a_gateway_policy_pinning_only_mr_td_is_refused() {
    let d = dir();
    let policy = d.path("gateway-policy.toml");
    let good = good(&d);
    let only_mr_td = format!(
        "[[profile]]\nplatform = \"tdx\"\nmr_td = [\"{}\"]\n",
        "11".repeat(48)
    );
    std::fs::write(&policy, &only_mr_td).unwrap();
    expect_refused(
        &d,
        "TDX profile on MRTD only",
        &good,
        &[
            "attestation.gateway_policy",
            "gateway-policy.toml",
            "must pin the boot chain",
            "missing rtmr0 (firmware configuration), rtmr1 (boot loader and kernel), rtmr2 (kernel command line and initrd)",
            "rtmr0 = \"any\"",
        ],
    );
    let z = "00".repeat(48);
    std::fs::write(
        &policy,
        format!("{only_mr_td}rtmr0 = [\"{z}\"]\nrtmr1 = \"any\"\nrtmr2 = [\"{z}\"]\n"),
    )
    .unwrap();
    let path = d.path("agent.toml");
    std::fs::write(&path, &good).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
}
