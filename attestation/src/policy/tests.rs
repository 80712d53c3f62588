use super::*;
use crate::claims::{fixtures, PlatformClaims, SnpClaims, SnpTcb};
use crate::evidence::SigningKeyKind;

fn claims(platform: Platform, measurement: u8, debug: bool) -> Claims {
    Claims {
        platform,
        report_data: [0; 64],
        debug,
        details: PlatformClaims::Snp(SnpClaims {
            reported_tcb: SnpTcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
                fmc: None,
            },
            ..fixtures::snp_claims(measurement)
        }),
    }
}

fn m(b: u8) -> String {
    hex::encode([b; 48])
}

#[test]
fn parses_profiles_and_matches_the_first_that_fits() {
    let text = format!(
        r#"
[[apps.app1.profile]]
platform = "sev-snp"
measurement = "{}"

[[apps.app1.profile]]
platform = "sim-snp"
measurement = "{}"
host_data = "{}"
min_tcb = {{ snp = 8, microcode = 100 }}
signing_keys = ["vcek"]
"#,
        m(1),
        m(5),
        hex::encode([2u8; 32])
    );
    let p = AppPolicy::from_toml(&text).unwrap();
    assert_eq!(p.apps["app1"].profile.len(), 2);
    assert_eq!(
        p.check("app1", &claims(Platform::SevSnp, 1, false))
            .unwrap()
            .platform(),
        Platform::SevSnp
    );
    assert_eq!(
        p.check("app1", &claims(Platform::SimSnp, 5, false))
            .unwrap()
            .platform(),
        Platform::SimSnp
    );
    assert_eq!(
        p.check("app2", &claims(Platform::SimSnp, 5, false)),
        Err(PolicyViolation::UnknownApp("app2".into()))
    );
    let err = p
        .check("app1", &claims(Platform::SevSnp, 9, false))
        .unwrap_err();
    assert!(
        matches!(&err, PolicyViolation::Refused { violations, .. } if matches!(violations[0], Violation::Mismatch { field: "measurement", .. }))
    );
    assert!(
        err.to_string()
            .starts_with("app app1: measurement not allowed"),
        "{err}"
    );
}

#[test]
fn tcb_host_data_key_kind_and_debug_are_enforced() {
    let base = SnpProfile::with_measurement([1; 48]);
    let c = claims(Platform::SimSnp, 1, false);
    base.check(&c).unwrap();
    // `base` with one change, checked against `c`.
    let check_with = |change: fn(&mut SnpProfile)| {
        let mut p = base.clone();
        change(&mut p);
        p.check(&c)
    };
    assert_eq!(
        check_with(|p| p.min_tcb = Some(MinTcb {
            snp: 9,
            ..Default::default()
        })),
        Err(Violation::TcbTooLow {
            component: "snp",
            minimum: 9,
            actual: 8
        })
    );
    assert!(matches!(
        check_with(|p| p.min_tcb = Some(MinTcb {
            fmc: 1,
            ..Default::default()
        })),
        Err(Violation::TcbTooLow {
            component: "fmc",
            ..
        })
    ));
    assert!(matches!(
        check_with(|p| p.host_data = Some([9; 32])),
        Err(Violation::Mismatch {
            field: "host_data",
            ..
        })
    ));
    assert!(matches!(
        check_with(|p| p.signing_keys = vec![SigningKeyKind::Vlek]),
        Err(Violation::SigningKey { .. })
    ));
    assert_eq!(
        base.check(&claims(Platform::SimSnp, 1, true)),
        Err(Violation::Debug)
    );
    let p = SnpProfile {
        allow_debug: true,
        ..base
    };
    p.check(&claims(Platform::SimSnp, 1, true)).unwrap();
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let good = format!(
        "[[profile]]\nplatform = \"sev-snp\"\nmeasurement = \"{}\"\n",
        m(1)
    );
    GatewayPolicy::from_toml(&good).unwrap();
    for bad in [
        format!("{good}typo = 1\n"),
        format!(
            "[[profile]]\nplatform = \"sev-snp\"\nmeasurment = \"{}\"\n",
            m(1)
        ),
        "[[profile]]\nplatform = \"sev-snp\"\nmeasurement = \"abcd\"\n".to_string(),
        format!(
            "[[profile]]\nplatform = \"sgx\"\nmeasurement = \"{}\"\n",
            m(1)
        ),
        format!("[[profile]]\nmeasurement = \"{}\"\n", m(1)),
        format!("{good}min_tcb = {{ snp = 1, spl = 2 }}\n"),
        "[apps.x]\nprofiles = []\n".to_string(),
        "unknown_top = true\n".to_string(),
    ] {
        assert!(
            GatewayPolicy::from_toml(&bad).is_err() && AppPolicy::from_toml(&bad).is_err(),
            "accepted: {bad}"
        );
    }
}

#[test]
fn gateway_policy_without_a_profile_for_the_platform() {
    let p = GatewayPolicy::from_toml(&format!(
        "[[profile]]\nplatform = \"sev-snp\"\nmeasurement = \"{}\"\n",
        m(1)
    ))
    .unwrap();
    let err = p.check(&claims(Platform::SimSnp, 1, false)).unwrap_err();
    assert!(matches!(
        err,
        PolicyViolation::NoProfileForPlatform {
            platform: Platform::SimSnp,
            ..
        }
    ));
    assert_eq!(err.to_string(), "gateway: no profile for platform sim-snp");
}

#[test]
fn policy_file_reload_keeps_the_old_policy_on_error() {
    let dir = std::env::temp_dir().join(format!("policy-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
            m(1)
        ),
    )
    .unwrap();
    let f = PolicyFile::<GatewayPolicy>::load(&path).unwrap();
    f.current()
        .check(&claims(Platform::SimSnp, 1, false))
        .unwrap();
    std::fs::write(
        &path,
        format!(
            "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
            m(2)
        ),
    )
    .unwrap();
    f.reload().unwrap();
    assert!(f
        .current()
        .check(&claims(Platform::SimSnp, 1, false))
        .is_err());
    f.current()
        .check(&claims(Platform::SimSnp, 2, false))
        .unwrap();
    std::fs::write(&path, "garbage = [").unwrap();
    assert!(matches!(f.reload(), Err(PolicyLoadError::Parse { .. })));
    f.current()
        .check(&claims(Platform::SimSnp, 2, false))
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
