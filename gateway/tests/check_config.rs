//! `gateway check-config` run as a program: a good file passes, each kind of bad file fails with its reason.

mod cli;

use std::path::{Path, PathBuf};

use cli::{assert_names_all, dir, keygen, p, run_gateway};
use test_support::Scratch;

/// Runs `gateway check-config --config PATH`: (success, stdout and stderr).
fn run(config: &Path) -> (bool, String) {
    let out = run_gateway(&["check-config", "--config", p(config)]);
    (out.success(), out.text())
}

/// Writes `d/gateway.toml`, a good configuration using the apps file `policy`: its path and its text.
#[allow(
    clippy::unwrap_used,
    reason = "test code: a failed step fails the test"
)]
fn write_config(d: &Scratch, policy: &Path) -> (PathBuf, String) {
    let text = format!(
        "base_domains = [\"apps.example.com\"]\n[tunnel]\npublic_endpoint = \"198.18.0.2:51820\"\n[attestation]\napp_policy = \"{}\"\n",
        policy.display()
    );
    let path = d.path("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

#[test]
fn check_config_accepts_good_and_explains_bad_files() {
    let d = dir();
    let policy = d.path("apps.toml");
    std::fs::write(&policy, "").unwrap();
    let (path, good) = write_config(&d, &policy);
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

/// `check-config` parses the operator's apps file as `run` would: profiles there (which no longer admit anything:
/// the app's owner signs them) are refused, naming the file and how to move them into a signed policy; a file that
/// only denies passes. A TDX profile pinning only MRTD (which would accept any kernel, initrd and command line on
/// that firmware) is refused where profiles now live, by `gateway app sign-policy`, naming the missing registers
/// and what to write; the same profile with RTMR0-2 stated is signed.
#[test]
fn check_config_refuses_profiles_in_the_operators_file_and_sign_policy_a_tdx_profile_pinning_only_mr_td(
) {
    let d = dir();
    let policy = d.path("apps.toml");
    let only_mr_td = format!(
        "[[apps.deadbeef111111111111111111111111.profile]]\nplatform = \"tdx\"\nmr_td = [\"{}\"]\n",
        "11".repeat(48)
    );
    std::fs::write(&policy, &only_mr_td).unwrap();
    let (path, _) = write_config(&d, &policy);
    let (ok, text) = run(&path);
    assert!(!ok, "accepted: {text}");
    assert_names_all(
        &text,
        &[
            "attestation.app_policy",
            "apps.toml",
            "no longer lists profiles",
            "gateway app sign-policy",
        ],
    );
    std::fs::write(
        &policy,
        "[apps.deadbeef111111111111111111111111]\ndeny = true\n",
    )
    .unwrap();
    let (ok, text) = run(&path);
    assert!(ok, "{text}");

    let (key, _) = keygen(&d);
    let profiles = d.path("profiles.toml");
    let only_mr_td = format!(
        "[[profile]]\nplatform = \"tdx\"\nmr_td = [\"{}\"]\n",
        "11".repeat(48)
    );
    std::fs::write(&profiles, &only_mr_td).unwrap();
    let signed = d.path("policy.json");
    let sign = || {
        run_gateway(&[
            "app",
            "sign-policy",
            "--key",
            key.to_str().unwrap(),
            "--version",
            "1",
            "--profiles",
            profiles.to_str().unwrap(),
            "--out",
            signed.to_str().unwrap(),
        ])
    };
    let refused = sign();
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert_names_all(
        &refused.stderr,
        &[
            "profiles.toml",
            "must pin the boot chain",
            "rtmr0 (firmware configuration), rtmr1 (boot loader and kernel), rtmr2 (kernel command line and initrd)",
            "rtmr0 = \"any\"",
        ],
    );
    assert!(!signed.exists());

    let pinned = format!(
        "{only_mr_td}rtmr0 = [\"{z}\"]\nrtmr1 = [\"{z}\"]\nrtmr2 = \"any\"\n",
        z = "00".repeat(48)
    );
    std::fs::write(&profiles, pinned).unwrap();
    let signed_ok = sign();
    assert_eq!(signed_ok.code, 0, "{}", signed_ok.stderr);
}
