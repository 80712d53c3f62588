//! `gateway attestation verify` and `sim-pki` run as a program.

mod cli;

use std::path::Path;
use std::time::{Duration, SystemTime};

use attestation::ratls::{CertOptions, RaTlsCertificate};
use attestation::{SimReportRequest, SimSnpAttester, SimSnpPki};
use cli::{
    assert_exit, assert_refused, check_sim_evidence, dir, gateway, gateway_with, p, sim_snp_root,
    verified_claims, verify_cert, write_sim_pki,
};

const SNP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attestation/testdata/snp");

#[test]
fn verify_real_snp_samples() {
    let claims = verified_claims(&[
        "verify",
        "--evidence",
        &format!("{SNP}/report_milan.hex"),
        "--vcek",
        &format!("{SNP}/vcek_milan.der"),
        "--chain",
        &format!("{SNP}/cert_chain_milan"),
        "--now",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(claims["platform"], "sev-snp");
    assert_eq!(claims["reported_tcb"]["snp"], 8);
    assert_eq!(claims["reported_tcb"]["microcode"], 115);

    // The debug sample verifies, but is refused without --allow-debug; a policy naming its measurement refuses it
    // for debug as well.
    let debug_sample = [
        "verify",
        "--evidence",
        &format!("{SNP}/debug_attestation.bin"),
        "--vcek",
        &format!("{SNP}/debug_vcek.der"),
        "--now",
        "2025-06-01T00:00:00Z",
    ];
    assert_refused(
        gateway(&debug_sample),
        &[
            "refused (policy): debug mode is not allowed",
            "--allow-debug",
        ],
    );
    let claims = verified_claims(&[&debug_sample[..], &["--allow-debug"]].concat());
    assert_eq!(claims["debug"], true);
    let d = dir();
    let policy = d.path("policy.json");
    let owner = attestation::owner::OwnerKey::from_seed([0x0d; 32]);
    let profiles = attestation::owner::ProfilesFile::from_toml(&format!(
        "[[profile]]\nplatform = \"sev-snp\"\nmeasurement = \"{}\"\n",
        claims["measurement"].as_str().unwrap()
    ))
    .unwrap();
    let signed = attestation::owner::SignedPolicy::sign(&owner, 1, profiles.profile).unwrap();
    std::fs::write(&policy, signed.to_json()).unwrap();
    // The debug sample under the owner's signed policy with `--app`.
    let with = |policy: &std::path::Path, app: &str| {
        gateway(&[
            "verify",
            "--evidence",
            &format!("{SNP}/debug_attestation.bin"),
            "--vcek",
            &format!("{SNP}/debug_vcek.der"),
            "--policy",
            p(policy),
            "--app",
            app,
            "--now",
            "2025-06-01T00:00:00Z",
        ])
    };
    assert_refused(
        with(&policy, &owner.app_id()),
        &["refused (policy)", "debug mode is not allowed"],
    );
    // The signed policy of another app, and profiles with --app, are unusable input.
    let another = attestation::owner::OwnerKey::from_seed([0x0e; 32]).app_id();
    assert_exit(with(&policy, &another), 2, &another);
    let profiles_file = d.path("profiles.toml");
    std::fs::write(&profiles_file, "[[profile]]\nplatform = \"sev-snp\"\n").unwrap();
    assert_exit(with(&profiles_file, &another), 2, "signed policy");

    // Expired VCEK, unusable input.
    let (code, _, err) = gateway(&[
        "verify",
        "--evidence",
        &format!("{SNP}/report_milan.hex"),
        "--vcek",
        &format!("{SNP}/vcek_milan.der"),
        "--now",
        "2031-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("VCEK certificate is not valid at 2031-01-01T00:00:00Z"),
        "{err}"
    );
    assert_exit(
        gateway(&["verify", "--evidence", &format!("{SNP}/report_milan.hex")]),
        2,
        "needs --vcek",
    );
    assert_exit(
        gateway(&["verify", "--evidence", &format!("{SNP}/absent")]),
        2,
        "reading",
    );
}

/// Debug evidence without `--policy`: a simulated SEV-SNP report and RA-TLS certificate of a debuggable guest are
/// refused (exit 1, the reason on stderr, no claims) unless `--allow-debug`; the same guest without DEBUG passes.
#[test]
fn verify_without_a_policy_refuses_debug_guests_unless_allowed() {
    let d = dir();
    let (pki, ark) = sim_snp_root(&d);
    let request = SimReportRequest {
        measurement: [0x42; 48],
        debug: true,
        ..SimReportRequest::default()
    };
    let evidence = pki.evidence(&request).unwrap();
    let report = d.path("debug-report.bin");
    std::fs::write(&report, &evidence.report).unwrap();
    let vcek = d.path("vcek.der");
    std::fs::write(&vcek, &evidence.vek).unwrap();
    let mut attester = SimSnpAttester::new(pki.clone(), [0x42; 48], [0; 32]);
    attester.debug = true;
    let cert = RaTlsCertificate::generate(&attester, &CertOptions::default()).unwrap();
    let cert_path = d.path("debug-cert.pem");
    std::fs::write(&cert_path, cert.cert_pem()).unwrap();
    let chain = d.path("chain.pem");
    let ask = pem::encode(&pem::Pem::new("CERTIFICATE", pki.ask_der()));
    std::fs::write(&chain, ask + &pki.ark_pem()).unwrap();
    let report_args = [
        "verify",
        "--evidence",
        p(&report),
        "--vcek",
        p(&vcek),
        "--chain",
        p(&chain),
    ];
    let cert_args = ["verify", "--evidence", p(&cert_path)];
    let trust = ["--trust-sim-root", p(&ark)];

    for base in [&report_args[..], &cert_args[..]] {
        assert_refused(
            gateway_with(base, &trust),
            &[
                "refused (policy): debug mode is not allowed",
                "debuggable",
                "--allow-debug",
            ],
        );
        let (code, out, err) = gateway_with(base, &[&trust[..], &["--allow-debug"]].concat());
        assert_eq!(code, 0, "{err}");
        let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(claims["debug"], true);
        assert_eq!(claims["measurement"], "42".repeat(48));
    }

    // With --policy the profiles decide, so --allow-debug is a usage error there.
    let policy = cli::profile_policy(&d, "sim-snp", "42");
    let (code, _, err) = gateway_with(
        &report_args,
        &[&trust[..], &["--policy", p(&policy), "--allow-debug"]].concat(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--allow-debug") && err.contains("--policy"),
        "{err}"
    );

    // A guest that is not debuggable needs no flag.
    let plain = pki
        .evidence(&SimReportRequest {
            debug: false,
            ..request
        })
        .unwrap();
    std::fs::write(&report, &plain.report).unwrap();
    let (code, out, err) = gateway_with(&report_args, &trust);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"debug\": false"), "{out}");
}

#[test]
fn sim_pki_round_trip_through_the_command() {
    let d = dir();
    let pki_dir = d.path("pki");
    write_sim_pki(&pki_dir, "cli test");
    let ark = pki_dir.join("snp-ark.pem");
    let pki = SimSnpPki::load_pem(&pki_dir).unwrap();
    let report = pki
        .report(&SimReportRequest {
            report_data: [3; 64],
            measurement: [0x42; 48],
            host_data: [0; 32],
            guest_svn: 0,
            debug: false,
            ..SimReportRequest::default()
        })
        .unwrap();
    let report_path = d.path("report.bin");
    std::fs::write(&report_path, &report).unwrap();
    let chain = d.path("chain.pem");
    let chain_text = std::fs::read_to_string(pki_dir.join("snp-ask.pem")).unwrap()
        + &std::fs::read_to_string(&ark).unwrap();
    std::fs::write(&chain, chain_text).unwrap();
    let vcek = pki_dir.join("snp-vcek.pem");
    let base = [
        "verify",
        "--evidence",
        p(&report_path),
        "--vcek",
        p(&vcek),
        "--chain",
        p(&chain),
    ];

    let platform = ("sim-snp", "measurement");
    check_sim_evidence(&d, &base, &ark, platform, "measurement not allowed");

    // A flipped bit in the report.
    let mut bad = report.clone();
    bad[0x90] ^= 0x10;
    std::fs::write(&report_path, &bad).unwrap();
    assert_exit(
        gateway_with(&base, &["--trust-sim-root", p(&ark)]),
        1,
        "signature",
    );

    // A file that is not a simulated root is not accepted as one.
    assert_exit(
        gateway_with(
            &base,
            &["--trust-sim-root", &format!("{SNP}/cert_chain_milan")],
        ),
        2,
        "not a simulated root",
    );
}

#[test]
fn verify_ra_tls_certificates() {
    let d = dir();
    let (pki, ark) = sim_snp_root(&d);
    let attester = SimSnpAttester::new(pki, [0x42; 48], [0; 32]);
    let cert = RaTlsCertificate::generate(&attester, &CertOptions::default()).unwrap();
    let cert_path = d.path("cert.pem");
    std::fs::write(&cert_path, cert.cert_pem()).unwrap();
    let (code, out, err) = verify_cert(&cert_path, &[], &ark);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"sim-snp\""), "{out}");

    let old = RaTlsCertificate::generate(
        &attester,
        &CertOptions {
            issued_at: Some(SystemTime::now() - Duration::from_secs(7200)),
            ..CertOptions::default()
        },
    )
    .unwrap();
    std::fs::write(&cert_path, old.cert_der().as_ref()).unwrap();
    assert_exit(
        verify_cert(&cert_path, &["--format", "ra-tls-cert"], &ark),
        1,
        "certificate-validity",
    );
}

/// The operator's forgery of the gateway's RA-TLS identity, end to end: the gateway attests its operator-supplied
/// TLS key in the public document of `gateway.<base>/v1/attestation`; the operator, who holds that key, wraps the
/// document's evidence in a self-signed certificate for the key with the CMW extension, as an RA-TLS certificate
/// would carry it. `gateway attestation verify --format ra-tls-cert` with the agents' gateway policy must refuse
/// it and name the purpose the evidence was made for, while it accepts the gateway's real RA-TLS certificate.
#[test]
fn forged_ra_tls_certificate_from_the_public_attestation_document_is_refused() {
    use attestation::ratls::{encode_cmw, CMW_OID};
    use attestation::{Evidence, KeyOrigin};
    use base64::Engine;
    use gateway::proxy::self_attestation::{AttestationDocument, SelfAttestation};

    let d = dir();
    let (pki, ark) = sim_snp_root(&d);
    let policy = cli::profile_policy(&d, "sim-snp", "42");
    let attester = std::sync::Arc::new(SimSnpAttester::new(pki, [0x42; 48], [0; 32]));
    let verify = |cert: &Path| {
        let options = ["--format", "ra-tls-cert", "--policy", p(&policy)];
        verify_cert(cert, &options, &ark)
    };

    // The gateway's RA-TLS certificate passes the policy: the refusal below is about the evidence's purpose.
    let genuine = RaTlsCertificate::generate(attester.as_ref(), &CertOptions::default()).unwrap();
    let genuine_path = d.path("genuine.pem");
    std::fs::write(&genuine_path, genuine.cert_pem()).unwrap();
    let (code, out, err) = verify(&genuine_path);
    assert_eq!(code, 0, "{out}{err}");

    // The operator's TLS key and the public document the gateway serves for it.
    let operator_key = rcgen::KeyPair::generate().unwrap();
    let served = rcgen::CertificateParams::new(vec!["gateway.apps.test".to_string()])
        .unwrap()
        .self_signed(&operator_key)
        .unwrap();
    let json = SelfAttestation::new(attester)
        .document(served.der(), KeyOrigin::OperatorSupplied)
        .unwrap();
    let doc: AttestationDocument = serde_json::from_slice(&json).unwrap();
    assert_eq!(doc.key_origin, KeyOrigin::OperatorSupplied);
    let evidence = base64::engine::general_purpose::STANDARD
        .decode(&doc.evidence)
        .unwrap();
    Evidence::decode(&doc.media_type, &evidence).unwrap();

    // The forgery: that evidence in a self-signed certificate for the same key.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    // As short-lived as a real RA-TLS certificate, so that only the binding can refuse it.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(1);
    let mut ext = rcgen::CustomExtension::from_oid_content(
        CMW_OID,
        encode_cmw(&doc.media_type, &evidence).unwrap(),
    );
    ext.set_criticality(false);
    params.custom_extensions.push(ext);
    let forged = params.self_signed(&operator_key).unwrap();
    let forged_path = d.path("forged.pem");
    std::fs::write(&forged_path, forged.pem()).unwrap();

    assert_refused(
        verify(&forged_path),
        &[
            "refused (binding)",
            "public-tls-key/operator-supplied",
            "ra-tls-key",
        ],
    );
}
