use super::*;
use crate::claims::{fixtures, PlatformClaims, SnpClaims, SnpTcb};
use crate::evidence::SigningKeyKind;
use crate::test_support::assert_message_names;

fn claims(platform: Platform, measurement: u8, debug: bool) -> Claims {
    Claims {
        platform,
        report_data: [0; 64],
        debug,
        config_digest: None,
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
            actual: 8,
            default_floor: false,
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

/// `claims(SimSnp, 1, false)` with its SNP part changed.
fn snp_with(change: impl FnOnce(&mut SnpClaims)) -> Claims {
    let mut c = claims(Platform::SimSnp, 1, false);
    let PlatformClaims::Snp(snp) = &mut c.details else {
        unreachable!()
    };
    change(snp);
    c
}

#[test]
fn without_min_tcb_the_default_floor_applies() {
    let p = SnpProfile::with_measurement([1; 48]);
    assert_eq!(p.min_tcb, None);
    // The floor itself is accepted, one below in any component is refused, naming it.
    let at_floor = SnpTcb {
        bootloader: MILAN_MIN_TCB.bootloader,
        tee: MILAN_MIN_TCB.tee,
        snp: MILAN_MIN_TCB.snp,
        microcode: MILAN_MIN_TCB.microcode,
        fmc: None,
    };
    p.check(&snp_with(|s| s.reported_tcb = at_floor)).unwrap();
    let below = [
        (
            "bootloader",
            SnpTcb {
                bootloader: 1,
                ..at_floor
            },
        ),
        ("snp", SnpTcb { snp: 4, ..at_floor }),
        (
            "microcode",
            SnpTcb {
                microcode: 67,
                ..at_floor
            },
        ),
    ];
    for (component, tcb) in below {
        let err = p.check(&snp_with(|s| s.reported_tcb = tcb)).unwrap_err();
        assert!(
            matches!(err, Violation::TcbTooLow { component: c, .. } if c == component),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(&format!("TCB {component} ")),
            "{err}"
        );
    }
    let zero = snp_with(|s| s.reported_tcb = SnpTcb::default());
    let err = p.check(&zero).unwrap_err();
    assert_eq!(
        err,
        Violation::TcbTooLow {
            component: "bootloader",
            minimum: 2,
            actual: 0,
            default_floor: true,
        }
    );
    assert_eq!(
        err.to_string(),
        "TCB bootloader 0 is below the minimum 2 (the default floor of a profile without min_tcb)"
    );
    // An explicit min_tcb replaces the floor: `min_tcb = {}` lowers it to nothing.
    let text = format!(
        "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\nmin_tcb = {{}}\n",
        m(1)
    );
    let lowered = GatewayPolicy::from_toml(&text).unwrap();
    lowered.check(&zero).unwrap();
    // Genoa and Turin number their SPLs otherwise and have no built-in floor.
    let genoa = snp_with(|s| {
        s.product = crate::claims::SnpProduct::Genoa;
        s.reported_tcb = SnpTcb::default();
    });
    p.check(&genoa).unwrap();
}

#[test]
fn vmpl_above_the_maximum_is_refused() {
    let p = SnpProfile::with_measurement([1; 48]);
    assert_eq!(p.max_vmpl, 0);
    p.check(&snp_with(|s| s.vmpl = 0)).unwrap();
    let vmpl2 = snp_with(|s| s.vmpl = 2);
    let err = p.check(&vmpl2).unwrap_err();
    assert_eq!(
        err,
        Violation::Vmpl {
            maximum: 0,
            actual: 2
        }
    );
    assert_eq!(err.to_string(), "VMPL 2 is above the maximum 0 (max_vmpl)");
    SnpProfile {
        max_vmpl: 2,
        ..p.clone()
    }
    .check(&vmpl2)
    .unwrap();
    assert!(SnpProfile { max_vmpl: 1, ..p }.check(&vmpl2).is_err());
    let text = |level: u32| {
        format!(
            "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\nmax_vmpl = {level}\n",
            m(1)
        )
    };
    let parsed = GatewayPolicy::from_toml(&text(3)).unwrap();
    assert!(matches!(&parsed.profile[0], Profile::SimSnp(p) if p.max_vmpl == 3));
    let err = GatewayPolicy::from_toml(&text(4)).unwrap_err().to_string();
    assert!(
        err.contains("max_vmpl 4 is not a VM privilege level (0 to 3)"),
        "{err}"
    );
}

#[test]
fn a_migration_agent_is_refused_unless_allowed() {
    let p = SnpProfile::with_measurement([1; 48]);
    let ma = snp_with(|s| s.guest_policy |= GUEST_POLICY_MIGRATE_MA);
    let err = p.check(&ma).unwrap_err();
    assert_eq!(
        err,
        Violation::MigrationAgent {
            guest_policy: 0x70000
        }
    );
    assert_message_names(&err, &["0x70000", "MIGRATE_MA", "allow_migration_agent"]);
    SnpProfile {
        allow_migration_agent: true,
        ..p
    }
    .check(&ma)
    .unwrap();
}

#[test]
fn smt_is_refused_only_where_the_profile_asks() {
    let smt = claims(Platform::SimSnp, 1, false);
    assert_ne!(smt.snp().unwrap().guest_policy & GUEST_POLICY_SMT, 0);
    let no_smt = snp_with(|s| s.guest_policy &= !GUEST_POLICY_SMT);
    let default = SnpProfile::with_measurement([1; 48]);
    assert!(default.allow_smt);
    default.check(&smt).unwrap();
    default.check(&no_smt).unwrap();
    let strict = SnpProfile {
        allow_smt: false,
        ..default
    };
    let err = strict.check(&smt).unwrap_err();
    assert_eq!(
        err,
        Violation::Smt {
            guest_policy: 0x30000
        }
    );
    assert!(err.to_string().contains("allow_smt = false"), "{err}");
    strict.check(&no_smt).unwrap();
    let text = format!(
        "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\nallow_smt = false\n",
        m(1)
    );
    let parsed = GatewayPolicy::from_toml(&text).unwrap();
    assert!(parsed.check(&smt).is_err());
    parsed.check(&no_smt).unwrap();
}
