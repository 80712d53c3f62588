//! `gateway attestation verify` with Intel TDX evidence: the real Intel samples, and `sim-tdx` quotes and RA-TLS
//! certificates under the simulated Intel PKI that `gateway attestation sim-pki` writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod cli;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attestation::ratls::{CertOptions, RaTlsCertificate};
use attestation::tdx::sim::{files, TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE};
use attestation::{SimTdReport, SimTdxAttester, SimTdxPki};
use cli::{
    assert_exit, check_sim_evidence, dir, gateway, gateway_with, p, profile_policy,
    verified_claims, write_sim_pki,
};

const TDX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attestation/testdata/tdx");
/// Inside the validity window of the real sample's collateral.
const SAMPLE_NOW: &str = "2025-07-01T12:00:00Z";

#[test]
fn real_tdx_quote_inside_and_outside_its_collateral_window() {
    let quote = format!("{TDX}/tdx_quote");
    let collateral = format!("{TDX}/tdx_quote_collateral.json");
    let base = ["verify", "--evidence", &quote, "--collateral", &collateral];

    let claims = verified_claims(&[&base[..], &["--now", SAMPLE_NOW]].concat());
    assert_eq!(claims["platform"], "tdx");
    assert_eq!(claims["kind"], "tdx");
    assert_eq!(claims["tcb_status"], "UpToDate");
    assert_eq!(claims["quote_version"], "v4");
    assert_eq!(claims["debug"], false);
    assert_eq!(claims["mr_td"].as_str().unwrap().len(), 96);

    // Today the collateral has expired.
    assert_exit(gateway(&base), 1, "collateral expired");

    // Without collateral the quote cannot be verified offline.
    assert_exit(
        gateway(&["verify", "--evidence", &quote, "--now", SAMPLE_NOW]),
        2,
        "--collateral",
    );
}

#[test]
fn outdated_real_tdx_quote_is_refused_for_its_tcb() {
    assert_exit(
        gateway(&[
            "verify",
            "--evidence",
            &format!("{TDX}/tdx_quote_outdated"),
            "--collateral",
            &format!("{TDX}/tdx_quote_outdated_collateral.json"),
            // Inside its collateral's window (2026-02-18T10:58:51Z .. 2026-03-20T10:41:15Z).
            "--now",
            "2026-03-01T00:00:00Z",
        ]),
        1,
        "refused (tcb)",
    );
}

/// `sim-pki` into a fresh directory; returns the directory and the PKI it wrote.
fn sim_pki(d: &test_support::Scratch) -> (PathBuf, Arc<SimTdxPki>) {
    let pki_dir = d.path("pki");
    write_sim_pki(&pki_dir, "tdx cli test");
    let pki = Arc::new(SimTdxPki::load(&pki_dir).unwrap());
    (pki_dir, pki)
}

fn td() -> SimTdReport {
    SimTdReport {
        mr_td: [0x42; 48],
        report_data: [3; 64],
        ..SimTdReport::default()
    }
}

#[test]
fn sim_tdx_quote_round_trip_through_the_command() {
    let d = dir();
    let (pki_dir, pki) = sim_pki(&d);
    let root = pki_dir.join(files::ROOT_CA);
    let collateral = pki_dir.join(files::COLLATERAL);
    let quote_path = d.path("quote.bin");
    let quote = pki.quote(&td()).unwrap();
    std::fs::write(&quote_path, &quote).unwrap();
    let base = [
        "verify",
        "--evidence",
        p(&quote_path),
        "--collateral",
        p(&collateral),
    ];

    // Verified trusting the simulated root, refused without; a policy on MRTD names the field, the expected and
    // the actual value.
    let refusal = format!(
        "MRTD not allowed: expected {}, got {}",
        "43".repeat(48),
        "42".repeat(48)
    );
    check_sim_evidence(&d, &base, &root, ("sim-tdx", "mr_td"), &refusal);

    // A flipped bit in the TD report (MRTD), in the QE report, and in the attestation signature.
    for (what, offset) in [
        ("TD report", 48 + 136),
        ("QE report", 48 + 584 + 4 + 134 + 200),
        ("signature", 48 + 584 + 4 + 7),
    ] {
        let mut bad = quote.clone();
        bad[offset] ^= 0x01;
        std::fs::write(&quote_path, &bad).unwrap();
        let (code, _, err) = gateway_with(&base, &["--trust-sim-root", p(&root)]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains("signature"), "{what}: {err}");
    }
}

#[test]
fn sim_tdx_ra_tls_certificates_through_the_command() {
    let d = dir();
    let (pki_dir, pki) = sim_pki(&d);
    let root = pki_dir.join(files::ROOT_CA);
    let cert_for = |td_attributes: u64, name: &str| {
        let attester = SimTdxAttester::new(
            pki.clone(),
            SimTdReport {
                td_attributes,
                ..td()
            },
        );
        let cert = RaTlsCertificate::generate(&attester, &CertOptions::default()).unwrap();
        let path = d.path(name);
        std::fs::write(&path, cert.cert_pem()).unwrap();
        path
    };
    let good = cert_for(TD_ATTR_SEPT_VE_DISABLE, "good.pem");
    let debug = cert_for(TD_ATTR_SEPT_VE_DISABLE | TD_ATTR_DEBUG, "debug.pem");
    let policy = profile_policy(&d, "sim-tdx", "42");
    let verify = |cert: &Path| {
        gateway(&[
            "verify",
            "--evidence",
            p(cert),
            "--trust-sim-root",
            p(&root),
            "--policy",
            p(&policy),
        ])
    };
    let (code, out, err) = verify(&good);
    assert_eq!(code, 0, "{err}");
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["platform"], "sim-tdx");
    // The default profile refuses a debug TD.
    assert_exit(verify(&debug), 1, "debug");
    // Without a policy the debug TD is refused as well, unless --allow-debug.
    let no_policy = |cert: &Path, more: &[&str]| {
        let args = [
            &[
                "verify",
                "--evidence",
                p(cert),
                "--trust-sim-root",
                p(&root),
            ],
            more,
        ];
        gateway(&args.concat())
    };
    let (code, out, err) = no_policy(&debug, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("refused (policy): debug mode is not allowed")
            && err.contains("--allow-debug"),
        "{err}"
    );
    let (code, out, err) = no_policy(&debug, &["--allow-debug"]);
    assert_eq!(code, 0, "{err}");
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["debug"], true);
    let (code, _, err) = no_policy(&good, &[]);
    assert_eq!(code, 0, "{err}");
}
