//! `gateway app keygen` and `sign-policy` run as a program, their output checked as a gateway checks it.

mod cli;

use std::os::unix::fs::PermissionsExt;

use attestation::owner::{OwnerKey, SignedPolicy};
use cli::{assert_exit, dir, keygen, outcome, p, run_gateway};

/// A simulated SEV-SNP profile accepting measurement `m` repeated, in the TOML profile syntax.
fn profiles_toml(m: &str) -> String {
    format!(
        "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\nmin_tcb = {{ bootloader = 0 }}\n",
        m.repeat(48)
    )
}

#[test]
fn keygen_writes_a_private_key_file_and_prints_its_app_id() {
    let d = dir();
    let (key, app_id) = keygen(&d);
    assert_eq!(app_id.len(), 32, "{app_id}");
    assert!(
        app_id.parse::<protocol::control::AppId>().is_ok(),
        "{app_id}"
    );
    assert_eq!(OwnerKey::read(&key).unwrap().app_id(), app_id);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // An existing key is never overwritten: the app it owns would be lost.
    let again = run_gateway(&["app", "keygen", "--out", p(&key)]);
    assert_eq!(again.code, 2, "{}", again.stdout);
    assert_eq!(OwnerKey::read(&key).unwrap().app_id(), app_id);
}

#[test]
fn sign_policy_writes_a_policy_that_verifies_for_the_keys_app() {
    let d = dir();
    let (key, app_id) = keygen(&d);
    let profiles = d.path("profiles.toml");
    std::fs::write(&profiles, profiles_toml("42")).unwrap();
    let signed = d.path("policy.json");
    let args = [
        "app",
        "sign-policy",
        "--key",
        p(&key),
        "--version",
        "7",
        "--profiles",
        p(&profiles),
        "--out",
        p(&signed),
    ];
    let out = run_gateway(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let document = SignedPolicy::from_json(&std::fs::read_to_string(&signed).unwrap()).unwrap();
    let verified = document.verify_for(&app_id).unwrap();
    assert_eq!(verified.version(), 7);
    assert_eq!(verified.profiles().len(), 1);
    verified
        .check(&test_support::claims::sim_snp(0x42))
        .unwrap();
    assert!(verified
        .check(&test_support::claims::sim_snp(0x43))
        .is_err());

    // A profile with a key the syntax does not know, or none at all, is not signed.
    std::fs::write(&profiles, format!("{}surprise = 1\n", profiles_toml("42"))).unwrap();
    assert_exit(outcome(run_gateway(&args)), 2, "surprise");
    std::fs::write(&profiles, "").unwrap();
    assert_exit(outcome(run_gateway(&args)), 2, "no [[profile]]");

    // A key file that is not a key is refused, naming the file.
    std::fs::write(&key, "secret_key = \"00\"\n").unwrap();
    std::fs::write(&profiles, profiles_toml("42")).unwrap();
    assert_exit(outcome(run_gateway(&args)), 2, "owner key file");
}
