//! Tests of [`TdxProfile`] and app policies with TDX profiles, on claims of simulated quotes.

use crate::claims::PlatformClaims;
use crate::policy::{AppPolicy, Pin, Profile, TdxProfile, Violation};
use crate::tdx::sim::{
    SIM_ADVISORY, SIM_TEE_TCB_SVN_OUT_OF_DATE, TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE,
};
use crate::tdx::test_support::*;
use crate::tdx::*;

/// The RTMR0-2 of [`td`].
const RTMRS: [[u8; 48]; 3] = [[0x20; 48], [0x21; 48], [0x22; 48]];

fn profile() -> TdxProfile {
    TdxProfile::pinned([0x11; 48], RTMRS)
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
    let err = TdxProfile::pinned([0xaa; 48], RTMRS)
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
        rtmr2: Pin::OneOf(vec![[1; 48], [2; 48]]),
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
    let (mr_td, rtmr3) = (hex::encode([0x11; 48]), hex::encode([0x23; 48]));
    let toml_text = format!(
        r#"
        [[apps.deadbeef11111111.profile]]
        platform = "sim-tdx"
        mr_td = ["{mr_td}"]
        rtmr0 = "any"
        rtmr1 = "any"
        rtmr2 = "any"
        rtmr3 = ["{rtmr3}"]
        tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
        "#
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
    assert!(AppPolicy::from_toml(&toml_text.replace(&rtmr3, "")).is_err());
    let empty = toml_text.replace(&format!("[\"{rtmr3}\"]"), "[]");
    assert!(AppPolicy::from_toml(&empty)
        .unwrap_err()
        .to_string()
        .contains("at least one"));
    assert!(AppPolicy::from_toml(&format!("{toml_text}\nrtmr4 = []")).is_err());
    assert!(AppPolicy::from_toml(&toml_text.replace("SWHardeningNeeded", "Fine")).is_err());
    let _ = PlatformClaims::Tdx(claims.tdx().unwrap().clone());
}

/// The kernel of a TD is measured into RTMR1 and RTMR2: a profile that pins them refuses a TD booted with
/// another kernel or command line on the same firmware (same MRTD and RTMR0), naming the register.
#[test]
fn pinned_rtmrs_refuse_another_kernel_on_the_same_firmware() {
    let p = profile();
    assert_eq!(p.check(&claims_of(td())), Ok(()));
    for (i, field) in [(0, "RTMR0"), (1, "RTMR1"), (2, "RTMR2")] {
        let mut rtmr = td().rtmr;
        rtmr[i] = [0x66; 48];
        let other = claims_of(SimTdReport { rtmr, ..td() });
        assert_eq!(
            p.check(&other),
            Err(Violation::Mismatch {
                field,
                expected: hex::encode(RTMRS[i]),
                actual: hex::encode([0x66; 48]),
            })
        );
        // "any" for that register, explicitly, accepts it.
        let mut any = p.clone();
        *[&mut any.rtmr0, &mut any.rtmr1, &mut any.rtmr2][i] = Pin::Any;
        assert_eq!(any.check(&other), Ok(()));
    }
}

/// A profile that names MRTD only does not parse: the error names each missing register and what to write.
#[test]
fn a_profile_pinning_only_mr_td_is_refused_with_what_to_write() {
    let mr_td = hex::encode([0x11; 48]);
    let only_mr_td =
        format!("[[apps.deadbeef11111111.profile]]\nplatform = \"tdx\"\nmr_td = [\"{mr_td}\"]\n");
    let err = AppPolicy::from_toml(&only_mr_td).unwrap_err().to_string();
    for needed in [
        "must pin the boot chain",
        "rtmr0 (firmware configuration)",
        "rtmr1 (boot loader and kernel)",
        "rtmr2 (kernel command line and initrd)",
        "rtmr0 = [\"<96 hex digits>\"]",
        "rtmr0 = \"any\"",
    ] {
        assert!(err.contains(needed), "{needed:?} not in: {err}");
    }
    // One register missing: only it is named.
    let two = format!("{only_mr_td}rtmr0 = \"any\"\nrtmr2 = [\"{mr_td}\"]\n");
    let err = AppPolicy::from_toml(&two).unwrap_err().to_string();
    assert!(
        err.contains("missing rtmr1 (boot loader and kernel)."),
        "{err}"
    );
    assert!(
        !err.contains("rtmr0 (") && !err.contains("rtmr2 ("),
        "{err}"
    );
    // All three stated: it parses, with "any" and a list.
    let complete = format!("{two}rtmr1 = \"any\"\n");
    let policy = AppPolicy::from_toml(&complete).unwrap();
    let Profile::Tdx(p) = &policy.apps["deadbeef11111111"].profile[0] else {
        panic!("not a TDX profile")
    };
    assert_eq!((&p.rtmr0, &p.rtmr1), (&Pin::Any, &Pin::Any));
    assert_eq!(p.rtmr2, Pin::exactly([0x11; 48]));
    // Any other string, an empty list and a short value are refused with a reason.
    for (value, reason) in [
        ("\"all\"", "got the string \"all\""),
        ("[]", "an empty list allows no value"),
        ("[\"abcd\"]", "expected 48 bytes of hex, got 2"),
        ("3", "a list of 96-hex-digit values, or the string \"any\""),
    ] {
        let text = complete.replace("rtmr1 = \"any\"", &format!("rtmr1 = {value}"));
        let err = AppPolicy::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(reason), "{value}: {err}");
    }
}

#[test]
fn profiles_serialize_to_what_parses_back() {
    let p = TdxProfile {
        rtmr1: Pin::Any,
        ..profile()
    };
    let policy = AppPolicy {
        apps: [(
            "deadbeef11111111".to_string(),
            crate::policy::AppEntry {
                profile: vec![Profile::Tdx(p)],
            },
        )]
        .into(),
    };
    let text = toml::to_string(&policy).unwrap();
    assert!(text.contains("rtmr1 = \"any\""), "{text}");
    assert_eq!(AppPolicy::from_toml(&text).unwrap(), policy);
}
