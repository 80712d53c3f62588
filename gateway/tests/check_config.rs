//! `gateway check-config` run as a program: a good file passes, each kind of bad file fails with its reason.

use std::process::Command;

use tempfile::TempDir;

/// A scratch directory, removed on drop (also when the test fails).
fn dir() -> TempDir {
    tempfile::tempdir().unwrap()
}

fn run(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("check-config")
        .arg("--config")
        .arg(config)
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
fn check_config_accepts_good_and_explains_bad_files() {
    let d = dir();
    let policy = d.path().join("apps.toml");
    std::fs::write(&policy, "").unwrap();
    let good = format!(
        "base_domains = [\"apps.example.com\"]\n[tunnel]\npublic_endpoint = \"198.18.0.2:51820\"\n[attestation]\napp_policy = \"{}\"\n",
        policy.display()
    );
    let path = d.path().join("gateway.toml");
    std::fs::write(&path, &good).unwrap();
    let (ok, text) = run(&path);
    assert!(ok, "{text}");
    assert!(text.contains("ok"), "{text}");

    std::fs::write(&path, good.replace("[tunnel]", "[tunnel]\nlisten_prot = 5")).unwrap();
    let (ok, text) = run(&path);
    assert!(!ok);
    assert!(
        text.contains("unknown field") && text.contains("listen_prot"),
        "{text}"
    );

    std::fs::write(
        &path,
        good.replace("198.18.0.2:51820", "nowhere")
            .replace("apps.example.com", "bad domain"),
    )
    .unwrap();
    let (ok, text) = run(&path);
    assert!(!ok);
    assert!(
        text.contains("2 problem(s)")
            && text.contains("public_endpoint")
            && text.contains("bad domain"),
        "{text}"
    );

    let (ok, text) = run(&d.path().join("missing.toml"));
    assert!(!ok);
    assert!(text.contains("cannot read"), "{text}");
}
