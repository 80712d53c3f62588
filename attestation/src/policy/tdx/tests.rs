//! Tests of [`TdxProfile`] and app policies with TDX profiles, on claims of simulated quotes.

use crate::claims::PlatformClaims;
use crate::policy::{AppPolicy, Profile, TdxProfile, Violation};
use crate::tdx::sim::{
    SIM_ADVISORY, SIM_TEE_TCB_SVN_OUT_OF_DATE, TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE,
};
use crate::tdx::test_support::*;
use crate::tdx::*;

fn profile() -> TdxProfile {
    TdxProfile::with_mr_td([0x11; 48])
}

#[test]
fn default_profile_refuses_debug_tds() {
    let debug = claims_of(SimTdReport {
        td_attributes: TD_ATTR_SEPT_VE_DISABLE | TD_ATTR_DEBUG,
        ..td()
    });
    assert!(debug.debug);
    assert_eq!(profile().check(&debug), Err(Violation::Debug));
    let allowing = TdxProfile {
        allow_debug: true,
        ..profile()
    };
    assert_eq!(allowing.check(&debug), Ok(()));
    assert_eq!(profile().check(&claims_of(td())), Ok(()));
}

#[test]
fn mismatches_name_the_field_with_expected_and_actual_hex() {
    let claims = claims_of(td());
    let err = TdxProfile::with_mr_td([0xaa; 48])
        .check(&claims)
        .unwrap_err();
    assert_eq!(
        err,
        Violation::Mismatch {
            field: "MRTD",
            expected: hex::encode([0xaa; 48]),
            actual: hex::encode([0x11; 48]),
        }
    );
    let p = TdxProfile {
        rtmr2: Some(vec![[1; 48], [2; 48]]),
        ..profile()
    };
    let text = p.check(&claims).unwrap_err().to_string();
    assert!(
        text.starts_with("RTMR2 not allowed: expected one of "),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("got {}", hex::encode([0x22; 48]))),
        "{text}"
    );
    let p = TdxProfile {
        mr_config_id: Some(vec![[9; 48]]),
        ..profile()
    };
    assert!(matches!(
        p.check(&claims),
        Err(Violation::Mismatch {
            field: "MRCONFIGID",
            ..
        })
    ));
    let p = TdxProfile {
        rtmr0: Some(vec![[0x20; 48]]),
        rtmr1: Some(vec![[0x21; 48]]),
        rtmr2: Some(vec![[0x22; 48]]),
        rtmr3: Some(vec![[0x23; 48]]),
        mr_config_id: Some(vec![[0x33; 48]]),
        ..profile()
    };
    assert_eq!(p.check(&claims), Ok(()));
}

#[test]
fn tcb_status_must_be_allowed() {
    let outdated = claims_of(SimTdReport {
        tee_tcb_svn: SIM_TEE_TCB_SVN_OUT_OF_DATE,
        ..td()
    });
    let err = profile().check(&outdated).unwrap_err();
    assert!(matches!(err, Violation::TcbStatus { .. }), "{err}");
    assert!(err.to_string().contains(SIM_ADVISORY), "{err}");
    let p = TdxProfile {
        tcb_statuses: vec![TcbStatus::UpToDate, TcbStatus::OutOfDate],
        ..profile()
    };
    assert_eq!(p.check(&outdated), Ok(()));
}

#[test]
fn app_policy_toml_with_tdx_profiles() {
    let toml_text = format!(
        r#"
        [[apps.deadbeef11111111.profile]]
        platform = "sim-tdx"
        mr_td = ["{}"]
        rtmr3 = ["{}"]
        tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
        "#,
        hex::encode([0x11; 48]),
        hex::encode([0x23; 48])
    );
    let policy = AppPolicy::from_toml(&toml_text).unwrap();
    let claims = claims_of(td());
    let matched = policy.check("deadbeef11111111", &claims).unwrap();
    assert!(matches!(matched, Profile::SimTdx(_)));
    // A real-TDX profile does not accept sim-tdx claims.
    let real = toml_text.replace("\"sim-tdx\"", "\"tdx\"");
    let err = AppPolicy::from_toml(&real)
        .unwrap()
        .check("deadbeef11111111", &claims)
        .unwrap_err();
    assert!(
        err.to_string().contains("no profile for platform sim-tdx"),
        "{err}"
    );
    // Empty allow lists, unknown keys and unknown statuses are errors.
    assert!(AppPolicy::from_toml(&toml_text.replace(&hex::encode([0x23; 48]), "")).is_err());
    let empty = toml_text.replace(&format!("[\"{}\"]", hex::encode([0x23; 48])), "[]");
    assert!(AppPolicy::from_toml(&empty)
        .unwrap_err()
        .to_string()
        .contains("at least one"));
    assert!(AppPolicy::from_toml(&format!("{toml_text}\nrtmr4 = []")).is_err());
    assert!(AppPolicy::from_toml(&toml_text.replace("SWHardeningNeeded", "Fine")).is_err());
    let _ = PlatformClaims::Tdx(claims.tdx().unwrap().clone());
}
