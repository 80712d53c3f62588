//! `cvm-agent check-config` refuses every MTU the tunnel endpoint would refuse at `run` time, so a file it
//! accepts never fails later when the tunnel comes up.

use std::path::Path;
use std::process::Command;

/// Writes an otherwise good configuration with `mtu` and runs `check-config` on it: (success, output).
fn check_mtu(dir: &Path, mtu: u16) -> (bool, String) {
    let policy = dir.join("gateway-policy.toml");
    std::fs::write(&policy, "").unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"app_id = "deadbeef111111111111111111111111"
gateways = ["https://198.18.0.1:8443"]
state_dir = "{state}"
[attestation]
backend = "sim-snp"
gateway_policy = "{policy}"
sim_pki = "{pki}"
[tunnel]
mtu = {mtu}
[[ports]]
port = 8080
target = "127.0.0.1:8080"
"#,
            state = dir.join("state").display(),
            policy = policy.display(),
            pki = dir.join("pki").display(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-agent"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn an_mtu_the_tunnel_cannot_use_is_refused_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    for mtu in [4000, 9000, 2001, 1279] {
        let (ok, out) = check_mtu(dir.path(), mtu);
        assert!(!ok, "mtu {mtu} accepted:\n{out}");
        assert!(
            out.contains(&format!("tunnel.mtu = {mtu} is outside 1280..=2000")),
            "mtu {mtu}:\n{out}"
        );
    }
    for mtu in [1280, 1420, 2000] {
        let (ok, out) = check_mtu(dir.path(), mtu);
        assert!(ok, "mtu {mtu} refused:\n{out}");
    }
    // The upper bound is the tunnel endpoint's own.
    assert_eq!(*protocol::tunnel::MTU_RANGE.end(), 2000);
}
