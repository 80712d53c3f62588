//! `gateway check-config` run as a program: a good file passes, each kind of bad file fails with its reason.

mod cli;

use cli::{dir, p, run_gateway};

/// Runs `gateway check-config --config PATH`: (success, stdout and stderr).
fn run(config: &std::path::Path) -> (bool, String) {
    let out = run_gateway(&["check-config", "--config", p(config)]);
    (out.success(), out.text())
}

#[test]
fn check_config_accepts_good_and_explains_bad_files() {
    let d = dir();
    let policy = d.path("apps.toml");
    std::fs::write(&policy, "").unwrap();
    let good = format!(
        "base_domains = [\"apps.example.com\"]\n[tunnel]\npublic_endpoint = \"198.18.0.2:51820\"\n[attestation]\napp_policy = \"{}\"\n",
        policy.display()
    );
    let path = d.path("gateway.toml");
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

    let (ok, text) = run(&d.path("missing.toml"));
    assert!(!ok);
    assert!(text.contains("cannot read"), "{text}");
}
