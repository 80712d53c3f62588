//! SEV-SNP verification against real AMD samples and simulated evidence.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns set up fixtures

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attestation::policy::{AppPolicy, PolicyViolation, Violation};
use attestation::{
    Attester, Evidence, Platform, PlatformFamily, SigningKeyKind, SimReportRequest, SimSnpAttester,
    SimSnpPki, SnpEvidence, SnpProduct, SnpTcb, TrustAnchors, Verifier, VerifyError,
};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/snp");

fn at(rfc3339: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
}

fn now() -> SystemTime {
    at("2025-06-01T00:00:00Z")
}

/// ASK and ARK DER from `cert_chain_milan` (PEM, ASK first).
fn milan_chain() -> (Vec<u8>, Vec<u8>) {
    let pems = pem::parse_many(std::fs::read(format!("{DATA}/cert_chain_milan")).unwrap()).unwrap();
    assert_eq!(pems.len(), 2);
    (pems[0].contents().to_vec(), pems[1].contents().to_vec())
}

fn milan_evidence(with_chain: bool) -> SnpEvidence {
    let hex_text = std::fs::read_to_string(format!("{DATA}/report_milan.hex")).unwrap();
    let report = hex::decode(hex_text.trim()).unwrap();
    let (ask, ark) = milan_chain();
    SnpEvidence {
        report,
        vek_kind: SigningKeyKind::Vcek,
        vek: std::fs::read(format!("{DATA}/vcek_milan.der")).unwrap(),
        ask: with_chain.then_some(ask),
        ark: with_chain.then_some(ark),
    }
}

fn debug_evidence() -> SnpEvidence {
    let (ask, ark) = milan_chain();
    SnpEvidence {
        report: std::fs::read(format!("{DATA}/debug_attestation.bin")).unwrap(),
        vek_kind: SigningKeyKind::Vcek,
        vek: std::fs::read(format!("{DATA}/debug_vcek.der")).unwrap(),
        ask: Some(ask),
        ark: Some(ark),
    }
}

fn pki() -> Arc<SimSnpPki> {
    static PKI: OnceLock<Arc<SimSnpPki>> = OnceLock::new();
    PKI.get_or_init(|| Arc::new(SimSnpPki::generate_small("attestation tests").unwrap()))
        .clone()
}

fn sim_verifier() -> Verifier {
    Verifier::new(
        TrustAnchors::production()
            .with_sim_snp_ark(pki().ark_der())
            .unwrap(),
    )
}

#[test]
fn real_milan_report_verifies_with_and_without_its_chain() {
    let v = Verifier::default();
    for with_chain in [true, false] {
        let claims = v
            .verify_unbound(&Evidence::Snp(milan_evidence(with_chain)), now())
            .unwrap();
        assert_eq!(claims.platform, Platform::SevSnp);
        let snp = claims.snp().unwrap();
        assert_eq!(snp.product, SnpProduct::Milan);
        assert_eq!(
            snp.reported_tcb,
            SnpTcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
                fmc: None
            }
        );
        assert_eq!(snp.signing_key, SigningKeyKind::Vcek);
        assert!(!claims.debug);
    }
    assert_eq!(v.cached_chains(), 2);
}

#[test]
fn real_report_checks_report_data_and_time() {
    let v = Verifier::default();
    let ev = Evidence::Snp(milan_evidence(true));
    let claims = v.verify_unbound(&ev, now()).unwrap();
    assert_eq!(v.verify(&ev, &claims.report_data, now()).unwrap(), claims);
    let mut wrong = claims.report_data;
    wrong[0] ^= 1;
    let err = v.verify(&ev, &wrong, now()).unwrap_err();
    assert!(
        matches!(err, VerifyError::ReportDataMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.check(), "binding");
    // The VCEK expires in April 2030; a cached chain is re-checked against the time as well.
    let refused_at = |rfc3339: &str| v.verify_unbound(&ev, at(rfc3339)).unwrap_err();
    match &refused_at("2031-01-01T00:00:00Z") {
        VerifyError::CertificateValidity { cert, .. } => assert_eq!(*cert, "VCEK"),
        other => panic!("unexpected {other}"),
    }
    let err = refused_at("2020-01-01T00:00:00Z");
    assert!(
        matches!(err, VerifyError::CertificateValidity { .. }),
        "{err}"
    );
}

/// The real Milan sample (TCB bl 3, tee 0, snp 8, ucode 115) meets the default TCB floor of a profile without
/// `min_tcb`; a `min_tcb` above its TCB refuses it, naming the component.
#[test]
fn real_milan_report_meets_the_default_tcb_floor() {
    let claims = Verifier::default()
        .verify_unbound(&Evidence::Snp(milan_evidence(true)), now())
        .unwrap();
    let m = hex::encode(claims.snp().unwrap().measurement);
    let profile =
        format!("[[apps.deadbeef.profile]]\nplatform = \"sev-snp\"\nmeasurement = \"{m}\"\n");
    AppPolicy::from_toml(&profile)
        .unwrap()
        .check("deadbeef", &claims)
        .unwrap();
    let err = AppPolicy::from_toml(&format!("{profile}min_tcb = {{ microcode = 116 }}\n"))
        .unwrap()
        .check("deadbeef", &claims)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("TCB microcode 115 is below the minimum 116"),
        "{err}"
    );
}

#[test]
fn debug_sample_verifies_but_default_policy_refuses_it() {
    let v = Verifier::default();
    let claims = v
        .verify_unbound(&Evidence::Snp(debug_evidence()), now())
        .unwrap();
    assert!(claims.debug);
    let m = hex::encode(claims.snp().unwrap().measurement);
    let policy = AppPolicy::from_toml(&format!(
        "[[apps.deadbeef.profile]]\nplatform = \"sev-snp\"\nmeasurement = \"{m}\"\n"
    ))
    .unwrap();
    let err = policy.check("deadbeef", &claims).unwrap_err();
    assert!(
        matches!(&err, PolicyViolation::Refused { violations, .. } if violations == &[Violation::Debug]),
        "{err}"
    );
    let allowing = AppPolicy::from_toml(&format!(
        "[[apps.deadbeef.profile]]\nplatform = \"sev-snp\"\nmeasurement = \"{m}\"\nallow_debug = true\n"
    ))
    .unwrap();
    allowing.check("deadbeef", &claims).unwrap();
}

#[test]
fn every_flipped_byte_of_the_report_is_refused() {
    let v = Verifier::default();
    let good = milan_evidence(true);
    v.verify_unbound(&Evidence::Snp(good.clone()), now())
        .unwrap();
    for i in 0..good.report.len() {
        let mut ev = good.clone();
        ev.report[i] ^= 1 << (i % 8);
        assert!(
            v.verify_unbound(&Evidence::Snp(ev), now()).is_err(),
            "flipped bit in report byte {i:#x} accepted"
        );
    }
}

#[test]
fn every_flipped_byte_of_a_certificate_is_refused() {
    let v = Verifier::default();
    let good = milan_evidence(true);
    let flips = |pick: fn(&mut SnpEvidence) -> &mut Vec<u8>| {
        let len = pick(&mut good.clone()).len();
        for i in 0..len {
            let mut ev = good.clone();
            pick(&mut ev)[i] ^= 1 << (i % 8);
            let r = v.verify_unbound(&Evidence::Snp(ev), now());
            assert!(r.is_err(), "flipped bit in certificate byte {i} accepted");
        }
    };
    flips(|e| &mut e.vek);
    flips(|e| e.ask.as_mut().unwrap());
    flips(|e| e.ark.as_mut().unwrap());
}

#[test]
fn a_chain_under_a_self_made_ark_is_refused() {
    // A self-made hierarchy that copies AMD's names: its ARK is not pinned, and without the ARK its ASK does not
    // verify under AMD's real Milan ARK.
    let fake = SimSnpPki::generate_impersonating_amd("impostor").unwrap();
    let mut ev = fake.evidence(&request([0; 64])).unwrap();
    let v = sim_verifier();
    let err = v
        .verify_unbound(&Evidence::Snp(ev.clone()), now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    ev.ark = None;
    let err = v
        .verify_unbound(&Evidence::Snp(ev.clone()), now())
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::CertificateSignature { cert: "ASK", .. }),
        "{err}"
    );
    ev.ask = None;
    let err = v.verify_unbound(&Evidence::Snp(ev), now()).unwrap_err();
    assert!(
        matches!(err, VerifyError::CertificateSignature { cert: "VCEK", .. }),
        "{err}"
    );
    // Another simulated PKI is not the trusted simulated one.
    let other = SimSnpPki::generate_small("another seed").unwrap();
    let err = v
        .verify_unbound(
            &Evidence::Snp(other.evidence(&request([0; 64])).unwrap()),
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
}

fn request(report_data: [u8; 64]) -> SimReportRequest {
    SimReportRequest {
        report_data,
        measurement: [0x11; 48],
        host_data: [0x22; 32],
        guest_svn: 1,
        debug: false,
        ..SimReportRequest::default()
    }
}

/// Simulated guests whose report breaks one rule of a default profile: each verifies, is refused by the profile
/// naming the rule and its values, and is accepted by a profile that allows it.
#[test]
fn sim_guest_policy_and_vmpl_are_checked_by_profiles() {
    let m = hex::encode([0x11; 48]);
    let profile =
        format!("[[apps.deadbeef.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{m}\"\n");
    let default = AppPolicy::from_toml(&profile).unwrap();
    let claims_of = |req: SimReportRequest| {
        let ev = Evidence::Snp(pki().evidence(&req).unwrap());
        sim_verifier().verify_unbound(&ev, now()).unwrap()
    };
    let good = claims_of(request([0; 64]));
    default.check("deadbeef", &good).unwrap();

    let cases: [(SimReportRequest, Violation, &str, &str); 4] = [
        (
            SimReportRequest {
                migrate_ma: true,
                ..request([0; 64])
            },
            Violation::MigrationAgent {
                guest_policy: 0x7_0000,
            },
            "allow_migration_agent = true",
            "MIGRATE_MA",
        ),
        (
            SimReportRequest {
                vmpl: 1,
                ..request([0; 64])
            },
            Violation::Vmpl {
                maximum: 0,
                actual: 1,
            },
            "max_vmpl = 1",
            "VMPL 1 is above the maximum 0",
        ),
        (
            SimReportRequest {
                debug: true,
                ..request([0; 64])
            },
            Violation::Debug,
            "allow_debug = true",
            "debug mode",
        ),
        (
            request([0; 64]),
            Violation::Smt {
                guest_policy: 0x3_0000,
            },
            "",
            "SMT",
        ),
    ];
    for (req, violation, allowing, named) in cases {
        let claims = claims_of(req);
        // The SMT case needs a profile asking for SMT to be off; the others break the default profile.
        let policy = if violation
            == (Violation::Smt {
                guest_policy: 0x3_0000,
            }) {
            AppPolicy::from_toml(&format!("{profile}allow_smt = false\n")).unwrap()
        } else {
            default.clone()
        };
        let err = policy.check("deadbeef", &claims).unwrap_err();
        assert!(
            matches!(&err, PolicyViolation::Refused { violations, .. } if violations == std::slice::from_ref(&violation)),
            "{err}"
        );
        assert!(err.to_string().contains(named), "{err}");
        if !allowing.is_empty() {
            let allowed = AppPolicy::from_toml(&format!("{profile}{allowing}\n")).unwrap();
            allowed.check("deadbeef", &claims).unwrap();
        }
    }
    let no_smt = claims_of(SimReportRequest {
        smt: false,
        ..request([0; 64])
    });
    assert_eq!(no_smt.snp().unwrap().guest_policy, 0x2_0000);
    AppPolicy::from_toml(&format!("{profile}allow_smt = false\n"))
        .unwrap()
        .check("deadbeef", &no_smt)
        .unwrap();
}

#[test]
fn sim_snp_round_trip() {
    let att = SimSnpAttester::new(pki(), [0x11; 48], [0x22; 32]);
    assert_eq!(att.platform(), Platform::SimSnp);
    let rd = attestation::ReportData::new(attestation::Purpose::RaTlsKey, b"sim-snp round trip");
    let ev = att.attest(&rd).unwrap();
    let Evidence::Snp(snp_ev) = &ev else {
        panic!("not SNP")
    };
    assert_eq!(snp_ev.report.len(), 1184);
    let claims = sim_verifier().verify(&ev, rd.as_bytes(), now()).unwrap();
    assert_eq!(claims.platform, Platform::SimSnp);
    let snp = claims.snp().unwrap();
    assert_eq!(snp.measurement, [0x11; 48]);
    assert_eq!(snp.host_data, [0x22; 32]);
    assert_eq!(&snp.chip_id, pki().chip_id());
    assert!(!claims.debug);
    // Through the binary encoding as well.
    let decoded = Evidence::decode(ev.media_type(), &ev.encode()).unwrap();
    assert_eq!(
        sim_verifier()
            .verify(&decoded, rd.as_bytes(), now())
            .unwrap(),
        claims
    );
}

#[test]
fn sim_snp_is_refused_unless_its_root_is_trusted() {
    let ev = Evidence::Snp(pki().evidence(&request([1; 64])).unwrap());
    let err = Verifier::default().verify_unbound(&ev, now()).unwrap_err();
    assert_eq!(
        err,
        VerifyError::SimulatedRootNotTrusted {
            family: PlatformFamily::Snp
        }
    );
    assert!(err.to_string().contains("simulated"), "{err}");
    // Also when the evidence leaves out the ARK and ASK.
    let Evidence::Snp(mut bare) = ev else {
        unreachable!()
    };
    bare.ark = None;
    bare.ask = None;
    let err = Verifier::default()
        .verify_unbound(&Evidence::Snp(bare), now())
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::SimulatedRootNotTrusted {
            family: PlatformFamily::Snp
        }
    );
}

#[test]
fn sim_snp_refused_by_a_policy_with_another_measurement() {
    let claims = sim_verifier()
        .verify_unbound(
            &Evidence::Snp(pki().evidence(&request([1; 64])).unwrap()),
            now(),
        )
        .unwrap();
    let other = "33".repeat(48);
    let policy = AppPolicy::from_toml(&format!(
        "[[apps.deadbeef.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{other}\"\n"
    ))
    .unwrap();
    let err = policy.check("deadbeef", &claims).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("measurement not allowed"), "{text}");
    assert!(
        text.contains(&other) && text.contains(&"11".repeat(48)),
        "{text}"
    );
    assert!(text.contains("app deadbeef"), "{text}");
    // The real-platform profile with the right measurement does not accept simulated evidence.
    let real_only = AppPolicy::from_toml(&format!(
        "[[apps.deadbeef.profile]]\nplatform = \"sev-snp\"\nmeasurement = \"{}\"\n",
        "11".repeat(48)
    ))
    .unwrap();
    assert!(matches!(
        real_only.check("deadbeef", &claims),
        Err(PolicyViolation::NoProfileForPlatform {
            platform: Platform::SimSnp,
            ..
        })
    ));
}

#[test]
fn sim_debug_guest_is_reported_as_debug() {
    let mut req = request([0; 64]);
    req.debug = true;
    let claims = sim_verifier()
        .verify_unbound(&Evidence::Snp(pki().evidence(&req).unwrap()), now())
        .unwrap();
    assert!(claims.debug);
    assert_ne!(claims.snp().unwrap().guest_policy & (1 << 19), 0);
}

#[test]
fn vlek_signed_reports_verify_through_the_asvk_and_obey_the_key_policy() {
    let ev = pki().vlek_evidence(&request([5; 64])).unwrap();
    let v = sim_verifier();
    let claims = v
        .verify(&Evidence::Snp(ev.clone()), &[5; 64], now())
        .unwrap();
    assert_eq!(claims.snp().unwrap().signing_key, SigningKeyKind::Vlek);
    let vcek_only = AppPolicy::from_toml(&format!(
        "[[apps.deadbeef.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\nsigning_keys = [\"vcek\"]\n",
        "11".repeat(48)
    ))
    .unwrap();
    let err = vcek_only.check("deadbeef", &claims).unwrap_err();
    assert!(
        err.to_string().contains("signing key vlek is not allowed"),
        "{err}"
    );

    // Presented as a VCEK, the VLEK certificate is refused: the report names the VLEK, and a VCEK needs a hwID.
    let mut relabelled = ev.clone();
    relabelled.vek_kind = SigningKeyKind::Vcek;
    assert!(v.verify_unbound(&Evidence::Snp(relabelled), now()).is_err());
    // A VLEK without its ASVK cannot be chained.
    let mut bare = ev.clone();
    bare.ask = None;
    let err = v.verify_unbound(&Evidence::Snp(bare), now()).unwrap_err();
    assert!(err.to_string().contains("ASVK"), "{err}");
    // The VCEK's report with the VLEK's certificate: signature refused.
    let mut swapped = ev;
    swapped.report = pki().report(&request([5; 64])).unwrap();
    assert!(v.verify_unbound(&Evidence::Snp(swapped), now()).is_err());
}
