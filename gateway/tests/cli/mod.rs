//! Shared by the tests that run `gateway` as a program: its subcommands, and path arguments.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attestation::SimSnpPki;

use test_support::process::{run, Finished};
use test_support::Scratch;

/// A scratch directory, removed when the test passes.
pub(crate) fn dir() -> Scratch {
    Scratch::new("gateway-cli")
}

/// Runs `gateway ARGS` to completion.
pub(crate) fn run_gateway(args: &[&str]) -> Finished {
    run(std::process::Command::new(env!("CARGO_BIN_EXE_gateway")).args(args))
}

/// Runs `gateway attestation ARGS`: (exit code, stdout, stderr).
pub(crate) fn gateway(args: &[&str]) -> (i32, String, String) {
    outcome(run_gateway(&[&["attestation"], args].concat()))
}

/// A finished run as (exit code, stdout, stderr).
pub(crate) fn outcome(out: Finished) -> (i32, String, String) {
    (out.code, out.stdout, out.stderr)
}

/// Checks a finished run (exit code, stdout, stderr): it exited with `code` and its stderr names `needle`.
pub(crate) fn assert_exit((got, _, err): (i32, String, String), code: i32, needle: &str) {
    assert_eq!(got, code, "{err}");
    assert!(err.contains(needle), "{err}");
}

/// Checks a run that refused its evidence (exit code, stdout, stderr): exit code 1, no claims printed, and a
/// stderr naming every one of `needles`.
pub(crate) fn assert_refused((code, out, err): (i32, String, String), needles: &[&str]) {
    assert_eq!(code, 1, "the evidence must be refused: {out}{err}");
    assert!(out.is_empty(), "no claims printed: {out}");
    assert_names_all(&err, needles);
}

/// Runs `gateway app keygen --out d/owner.key`, which must succeed: the key file and the app id it printed.
pub(crate) fn keygen(d: &Scratch) -> (PathBuf, String) {
    let key = d.path("owner.key");
    let out = run_gateway(&["app", "keygen", "--out", p(&key)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    (key, out.stdout.trim().to_owned())
}

/// Checks that `text` names every one of `needles`.
pub(crate) fn assert_names_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
}

/// Runs `gateway attestation ARGS`, which must succeed, and parses the claims it prints.
pub(crate) fn verified_claims(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = gateway(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Runs `gateway attestation sim-pki --seed SEED --small --out DIR`, which must succeed.
pub(crate) fn write_sim_pki(dir: &Path, seed: &str) {
    let (code, _, err) = gateway(&["sim-pki", "--seed", seed, "--small", "--out", p(dir)]);
    assert_eq!(code, 0, "{err}");
}

/// A path as a command-line argument.
pub(crate) fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `gateway attestation BASE EXTRA`: the shared arguments of a test and those of one case.
pub(crate) fn gateway_with(base: &[&str], extra: &[&str]) -> (i32, String, String) {
    gateway(&[base, extra].concat())
}

/// Checks simulated evidence of `platform` (`sim-snp` or `sim-tdx`) made with measurement `42..` (the field
/// `measurement_field` of the claims) and report data `03..`: `gateway attestation BASE` verifies it when the
/// simulated `root` is trusted, refuses it for want of a root of trust when it is not, and refuses it with
/// `policy_refusal` under a policy (written in `d`) allowing only measurement `43..`.
pub(crate) fn check_sim_evidence(
    d: &Scratch,
    base: &[&str],
    root: &Path,
    (platform, measurement_field): (&str, &str),
    policy_refusal: &str,
) {
    let trust = ["--trust-sim-root", p(root)];
    let claims = verified_claims(&[base, &trust].concat());
    assert_eq!(claims["platform"], platform);
    assert_eq!(claims[measurement_field], "42".repeat(48));
    assert_eq!(claims["report_data"], "03".repeat(64));

    let (code, _, err) = gateway(base);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("simulated") && err.contains("root-of-trust"),
        "{err}"
    );

    let policy = profile_policy(d, platform, "43");
    let policy_args = [&trust[..], &["--policy", p(&policy)]].concat();
    assert_exit(gateway_with(base, &policy_args), 1, policy_refusal);
}

/// Writes `d/policy.toml`: one profile for `platform` (`sim-snp` or `sim-tdx`) allowing the measurement (MRTD for
/// TDX) of 48 bytes, each `byte` (two hex digits).
pub(crate) fn profile_policy(d: &Scratch, platform: &str, byte: &str) -> std::path::PathBuf {
    let m = byte.repeat(48);
    let allowed = if platform.ends_with("tdx") {
        // The simulated TD's RTMRs are zero.
        let zero = "00".repeat(48);
        format!("mr_td = [\"{m}\"]\nrtmr0 = [\"{zero}\"]\nrtmr1 = [\"{zero}\"]\nrtmr2 = \"any\"")
    } else {
        format!("measurement = \"{m}\"")
    };
    let path = d.path("policy.toml");
    std::fs::write(
        &path,
        format!("[[profile]]\nplatform = \"{platform}\"\n{allowed}\n"),
    )
    .unwrap();
    path
}

/// The simulated SEV-SNP PKI, its root written to `ark.pem` in `d`.
pub(crate) fn sim_snp_root(d: &Scratch) -> (Arc<SimSnpPki>, PathBuf) {
    let pki = test_support::pki::sim_snp();
    let ark = d.path("ark.pem");
    std::fs::write(&ark, pki.ark_pem()).unwrap();
    (pki, ark)
}

/// Runs `gateway attestation verify --evidence CERT MORE... --trust-sim-root ARK`.
pub(crate) fn verify_cert(cert: &Path, more: &[&str], ark: &Path) -> (i32, String, String) {
    let args = [
        &["verify", "--evidence", p(cert)],
        more,
        &["--trust-sim-root", p(ark)],
    ];
    gateway(&args.concat())
}
