//! Tests of [`AttestationSettings`]: parsing into domain types, embedding, problems, and what the settings build.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::*;
use crate::platform::Platform;

/// A section as a binary would declare it: its own key beside the shared ones, unknown keys refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[allow(dead_code)]
    gateway_policy: PathBuf,
    #[serde(flatten)]
    settings: AttestationSettings,
}

fn section(extra: &str) -> Result<AttestationSettings, toml::de::Error> {
    toml::from_str::<Section>(&format!("gateway_policy = \"/p.toml\"\n{extra}")).map(|s| s.settings)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tee-gateway-settings-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_empty_section_takes_the_defaults() {
    let s = section("").unwrap();
    assert_eq!(s, AttestationSettings::auto());
    assert_eq!(s.backend, Backend::Auto);
    assert_eq!(
        s.certificate_validity.duration(),
        CertificateValidity::DEFAULT
    );
    assert_eq!(s.measurement(), [0; 48]);
    assert!(s.problems().is_empty());
}

#[test]
fn values_are_parsed_into_domain_types() {
    let s = section(&format!(
        "backend = \"sim-tdx\"\nsim_pki = \"/pki\"\nsim_measurement = \"{}\"\ncertificate_validity_secs = 600\n\
         trusted_sim_roots = [\"/a\", \"/b\"]\ntdx_collateral_dir = \"/c\"",
        "ab".repeat(48)
    ))
    .unwrap();
    assert_eq!(s.backend, Backend::SimTdx);
    assert_eq!(s.sim_pki.as_deref(), Some(Path::new("/pki")));
    assert_eq!(s.measurement(), [0xab; 48]);
    assert_eq!(s.sim_measurement.unwrap().to_string(), "ab".repeat(48));
    assert_eq!(s.certificate_validity.duration().as_secs(), 600);
    assert_eq!(s.trusted_sim_roots.len(), 2);
    assert_eq!(s.tdx_collateral_dir.as_deref(), Some(Path::new("/c")));
}

#[test]
fn bad_values_and_unknown_keys_are_refused_while_parsing() {
    for (text, expected) in [
        ("sim_measurement = \"ab\"", "96 hex characters"),
        (
            "certificate_validity_secs = 59",
            "certificate_validity_secs = 59 is below 60",
        ),
        ("certificate_validity_secs = -1", "expected u64"),
        ("backend = \"sgx\"", "unknown variant `sgx`"),
        ("bakend = \"tdx\"", "unknown field `bakend`"),
    ] {
        let e = section(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}: {e}");
    }
    assert_eq!(
        CertificateValidity::from_secs(60)
            .unwrap()
            .duration()
            .as_secs(),
        60
    );
    assert_eq!(CertificateValidity::from_secs(1), Err(ValidityTooShort(1)));
}

#[test]
fn problems_name_the_key_and_what_is_wrong() {
    let dir = scratch("problems");
    let empty_root = dir.join("empty");
    std::fs::create_dir_all(&empty_root).unwrap();
    let mut s = AttestationSettings {
        backend: Backend::SimSnp,
        ..AttestationSettings::auto()
    };
    assert_eq!(s.problems(), vec![SettingsProblem::SimPkiMissing]);
    s.sim_pki = Some(dir.join("absent"));
    s.trusted_sim_roots = vec![dir.join("nowhere"), empty_root.clone()];
    s.tdx_collateral_dir = Some(dir.join("no-collateral"));
    let text: Vec<String> = s.problems().iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 4, "{text:?}");
    assert!(
        text[0].starts_with("attestation.sim_pki: ") && text[0].ends_with("absent does not exist")
    );
    assert!(
        text[1].starts_with("attestation.trusted_sim_roots: ")
            && text[1].ends_with("does not exist")
    );
    assert!(
        text[2].contains("holds neither") && text[2].contains("snp-ark.pem"),
        "{}",
        text[2]
    );
    assert!(
        text[3].starts_with("attestation.tdx_collateral_dir: ")
            && text[3].ends_with("is not a directory")
    );

    let real = AttestationSettings {
        backend: Backend::Tdx,
        sim_pki: Some(dir.clone()),
        sim_measurement: Some(Measurement([1; 48])),
        ..AttestationSettings::auto()
    };
    assert_eq!(
        real.problems(),
        vec![
            SettingsProblem::SimPkiUnused,
            SettingsProblem::SimMeasurementUnused
        ]
    );
    assert_eq!(
        SettingsProblem::SimPkiUnused.to_string(),
        "attestation.sim_pki is only used with a sim-* backend; remove it"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn settings_build_an_attester_whose_evidence_their_verifier_accepts() {
    let dir = scratch("build");
    crate::test_support::pki().write_pem(&dir).unwrap();
    let s = AttestationSettings {
        backend: Backend::SimSnp,
        sim_pki: Some(dir.clone()),
        sim_measurement: Some(Measurement([7; 48])),
        trusted_sim_roots: vec![dir.clone()],
        ..AttestationSettings::auto()
    };
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    let attester = s.attester().unwrap();
    assert_eq!(attester.platform(), Platform::SimSnp);
    assert!(s.trust_anchors().unwrap().trusts_simulated());
    let setup = s.verifier().unwrap();
    assert!(setup.collateral.is_none());
    let evidence = attester
        .attest(&crate::ReportData::test_bytes([3; 64]))
        .unwrap();
    let claims = setup
        .verifier
        .verify(&evidence, &[3; 64], SystemTime::now())
        .unwrap();
    assert_eq!(claims.platform, Platform::SimSnp);
    assert_eq!(claims.snp().unwrap().measurement, [7; 48]);

    // Without trusting the simulated root, the same evidence is refused.
    let untrusting = AttestationSettings {
        trusted_sim_roots: Vec::new(),
        ..s.clone()
    };
    assert!(untrusting
        .verifier()
        .unwrap()
        .verifier
        .verify(&evidence, &[3; 64], SystemTime::now())
        .is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_collateral_directory_gives_the_verifier_a_source_that_does_not_fetch() {
    let dir = scratch("collateral");
    let s = AttestationSettings {
        tdx_collateral_dir: Some(dir.clone()),
        ..AttestationSettings::auto()
    };
    let setup = s.verifier().unwrap();
    let source = setup.collateral.unwrap();
    assert!(!source.fetches());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "pccs")]
#[test]
fn a_pccs_url_gives_a_source_that_fetches() {
    let s = AttestationSettings::auto();
    assert!(s.verifier_with_pccs(None).unwrap().collateral.is_none());
    let setup = s.verifier_with_pccs(Some("http://127.0.0.1:1")).unwrap();
    assert!(setup.collateral.unwrap().fetches());
}

#[test]
fn missing_inputs_are_reported_with_their_key() {
    let s = AttestationSettings {
        backend: Backend::SimTdx,
        ..AttestationSettings::auto()
    };
    let e = s.attester().err().unwrap();
    assert!(matches!(
        e,
        SettingsError::Select(SelectError::MissingSimPki(_))
    ));
    assert_eq!(e.to_string(), "sim-tdx needs attestation.sim_pki");
    let s = AttestationSettings {
        trusted_sim_roots: vec![PathBuf::from("/nonexistent/tee-gateway-roots")],
        ..AttestationSettings::auto()
    };
    assert!(s
        .trust_anchors()
        .unwrap_err()
        .to_string()
        .contains("holds neither"));
}

#[test]
fn freshness_keys_parse_and_reach_the_verifiers() {
    let s = section("").unwrap();
    assert_eq!(
        s.max_certificate_lifetime.duration(),
        MaxCertificateLifetime::DEFAULT
    );
    assert_eq!(s.tdx_min_tcb_evaluation_data_number, None);
    let s =
        section("max_certificate_lifetime_secs = 7200\ntdx_min_tcb_evaluation_data_number = 18")
            .unwrap();
    assert_eq!(s.max_certificate_lifetime.duration().as_secs(), 7200);
    assert_eq!(s.tdx_min_tcb_evaluation_data_number, Some(18));
    let v = s.ratls_verifier(
        Arc::new(s.verifier().unwrap().verifier),
        Arc::new(crate::policy::PolicyFn(|_: &crate::Claims| Ok(()))),
    );
    assert_eq!(v.max_lifetime().as_secs(), 7200);
    let e = section("max_certificate_lifetime_secs = 30")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_certificate_lifetime_secs = 30 is below 60"),
        "{e}"
    );
    // One's own certificates (validity plus the backdating) must fit the limit peers apply.
    let s =
        section("certificate_validity_secs = 7200\nmax_certificate_lifetime_secs = 7200").unwrap();
    assert_eq!(
        s.problems(),
        vec![SettingsProblem::ValidityAboveMaxLifetime {
            validity: 7200,
            backdate: 300,
            max: 7200
        }]
    );
    assert!(s.problems()[0]
        .to_string()
        .contains("exceeds attestation.max_certificate_lifetime_secs = 7200"));
}
