//! Tests of TDX evidence through the crate's [`crate::Verifier`]: platforms, trust, report data, collateral sources.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::tdx::test_support::*;
use crate::tdx::*;
use crate::test_support::assert_message_names;
use crate::{Claims, Evidence, TrustAnchors, Verifier, VerifyError};

#[test]
fn sim_tdx_evidence_verifies_as_sim_tdx() {
    let rd = [9u8; 64];
    let ev = sim_evidence(td(), rd);
    // Through the media-type encoding, as RA-TLS carries it.
    let ev = Evidence::decode(ev.media_type(), &ev.encode()).unwrap();
    let v = trusting();
    let claims = v.verify(&ev, &rd, SystemTime::now()).unwrap();
    assert_eq!(claims.platform, crate::Platform::SimTdx);
    assert_eq!(claims.report_data, rd);
    assert!(!claims.debug);
    let tdx = claims.tdx().unwrap();
    assert_eq!(tdx.td.mr_td, [0x11; 48]);
    assert_eq!(tdx.tcb_status, TcbStatus::UpToDate);
    let json = serde_json::to_value(&claims).unwrap();
    assert_eq!(json["kind"], "tdx");
    assert_eq!(json["platform"], "sim-tdx");
    assert_eq!(json["mr_td"], hex::encode([0x11; 48]));
    assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), claims);
    // The second verification is served from the cache.
    let cached = v.cached_chains();
    assert!(cached >= 1);
    v.verify(&ev, &rd, SystemTime::now()).unwrap();
    assert_eq!(v.cached_chains(), cached);
}

#[test]
fn sim_tdx_evidence_is_refused_without_trusting_the_simulated_root() {
    let rd = [1u8; 64];
    let ev = sim_evidence(td(), rd);
    let err = Verifier::default()
        .verify(&ev, &rd, SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::SimulatedRootNotTrusted {
                family: crate::PlatformFamily::Tdx
            }
        ),
        "{err}"
    );
    // Trusting another simulated root does not help.
    let other = SimTdxPki::from_seed(b"other").unwrap();
    let v = Verifier::new(
        TrustAnchors::production()
            .with_sim_tdx_root(other.root_der())
            .unwrap(),
    );
    let err = v.verify(&ev, &rd, SystemTime::now()).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    assert_eq!(err.check(), "root-of-trust");
}

#[test]
fn report_data_that_does_not_match_is_refused() {
    let ev = sim_evidence(td(), [1u8; 64]);
    let err = trusting()
        .verify(&ev, &[2u8; 64], SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::ReportDataMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.check(), "binding");
}

#[test]
fn evidence_without_collateral_uses_the_collateral_source() {
    let rd = [3u8; 64];
    let mut ev = sim_tdx_evidence(rd);
    let collateral = ev.collateral.take().unwrap();
    let ev = Evidence::Tdx(ev);
    let err = trusting().verify(&ev, &rd, SystemTime::now()).unwrap_err();
    assert!(matches!(err, VerifyError::Collateral { .. }), "{err}");

    let dir = tempdir("verifier-collateral");
    let source = Arc::new(
        CollateralSource::new(CollateralConfig {
            cache_dir: Some(dir.clone()),
            ..Default::default()
        })
        .unwrap(),
    );
    let v = trusting().with_tdx_collateral(source.clone());
    let err = v.verify(&ev, &rd, SystemTime::now()).unwrap_err();
    assert!(
        err.to_string().contains("no valid TDX collateral cached"),
        "{err}"
    );
    let key = CollateralKey::for_quote(&match &ev {
        Evidence::Tdx(t) => t.quote.clone(),
        _ => unreachable!(),
    })
    .unwrap();
    collateral
        .save(&dir.join(format!("tdx-{}-{}.json", key.fmspc, key.ca)))
        .unwrap();
    assert_eq!(
        v.verify(&ev, &rd, SystemTime::now()).unwrap().report_data,
        rd
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn real_evidence_verifies_as_tdx_then_expires() {
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let rd = TdReport::parse(&quote).unwrap().report_data;
    let ev = Evidence::Tdx(TdxEvidence {
        quote,
        collateral: Some(collateral),
    });
    let claims = Verifier::default().verify(&ev, &rd, sample_now()).unwrap();
    assert_eq!(claims.platform, crate::Platform::Tdx);
    let err = Verifier::default()
        .verify(&ev, &rd, SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::CollateralExpired { .. }),
        "{err}"
    );
    assert_eq!(err.check(), "collateral");
    assert!(err.to_string().starts_with("collateral expired"), "{err}");
}

#[test]
fn outdated_real_evidence_is_refused_as_tcb() {
    let quote = std::fs::read(testdata("tdx_quote_outdated")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_outdated_collateral.json")).unwrap();
    let now =
        UNIX_EPOCH + Duration::from_secs(collateral.window(&[]).unwrap().starts.not_before + 60);
    let ev = Evidence::Tdx(TdxEvidence {
        quote,
        collateral: Some(collateral),
    });
    let err = Verifier::default().verify_unbound(&ev, now).unwrap_err();
    assert_eq!(err.check(), "tcb", "{err}");
}

/// Simulated collateral with evaluation data number `number`, issued `age` before now and valid for 30 days.
fn collateral_numbered(number: u32, age: Duration) -> Collateral {
    pki()
        .collateral_with(&sim::SimCollateralOptions {
            issued: SystemTime::now() - age,
            validity: Duration::from_secs(30 * 24 * 3600),
            revoke_pck: false,
            evaluation_data_number: number,
        })
        .unwrap()
}

/// Evidence over `rd` carrying `collateral`.
fn evidence_carrying(rd: [u8; 64], collateral: Collateral) -> Evidence {
    let mut ev = sim_tdx_evidence(rd);
    ev.collateral = Some(collateral);
    Evidence::Tdx(ev)
}

/// `v`'s verdict, now, on evidence over report data `rd` that carries `collateral`.
fn verify_carrying(
    v: &Verifier,
    rd: [u8; 64],
    collateral: Collateral,
) -> Result<crate::Claims, crate::VerifyError> {
    v.verify(&evidence_carrying(rd, collateral), &rd, SystemTime::now())
}

/// A verifier trusting the simulated root whose own collateral for the simulated platform is `own`.
fn holding(own: Collateral) -> Verifier {
    let source = Arc::new(CollateralSource::new(CollateralConfig::default()).unwrap());
    let quote = pki().quote(&td()).unwrap();
    source
        .insert(CollateralKey::for_quote(&quote).unwrap(), own)
        .unwrap();
    trusting().with_tdx_collateral(source)
}

#[test]
fn carried_collateral_older_than_the_verifiers_is_refused_naming_both_numbers() {
    let rd = [0x31u8; 64];
    let hour = Duration::from_secs(3600);
    let v = holding(collateral_numbered(18, hour));
    // The attacker's evidence carries collateral from before the TCB recovery that raised the number to 18.
    let err = verify_carrying(&v, rd, collateral_numbered(17, hour)).unwrap_err();
    assert_eq!(err.check(), "collateral-version", "{err}");
    assert_message_names(
        &err,
        &[
            "older than the verifier's",
            "TCB info has tcbEvaluationDataNumber 17",
            "the verifier's has 18",
        ],
    );
    // The same number issued earlier than the verifier's is older too.
    let err = verify_carrying(&v, rd, collateral_numbered(18, 2 * hour)).unwrap_err();
    assert_eq!(err.check(), "collateral-version", "{err}");
    // As recent as the verifier's, or newer (the verifier not refreshed yet): accepted.
    for carried in [collateral_numbered(18, hour), collateral_numbered(19, hour)] {
        let claims = verify_carrying(&v, rd, carried).unwrap();
        assert_eq!(claims.report_data, rd);
    }
}

#[test]
fn collateral_below_the_configured_minimum_is_refused_outright() {
    let rd = [0x32u8; 64];
    let hour = Duration::from_secs(3600);
    // No collateral of its own: the carried collateral is all there is, and it is below the floor.
    let v = trusting().with_tdx_min_evaluation(Some(18));
    let err = verify_carrying(&v, rd, collateral_numbered(17, hour)).unwrap_err();
    assert_eq!(err.check(), "collateral-version", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("tcbEvaluationDataNumber 17, below the minimum 18"),
        "{text}"
    );
    verify_carrying(&v, rd, collateral_numbered(18, hour)).unwrap();
    // The verifier's own collateral is held to the same floor.
    let v = holding(collateral_numbered(16, hour)).with_tdx_min_evaluation(Some(18));
    let Evidence::Tdx(mut bare) = evidence_carrying(rd, collateral_numbered(16, hour)) else {
        unreachable!()
    };
    bare.collateral = None;
    let err = v
        .verify(&Evidence::Tdx(bare), &rd, SystemTime::now())
        .unwrap_err();
    assert!(
        err.to_string().contains("16, below the minimum 18"),
        "{err}"
    );
}

#[test]
fn the_verifiers_collateral_is_preferred_to_carried_collateral_of_the_same_version() {
    let rd = [0x33u8; 64];
    let hour = Duration::from_secs(3600);
    // Carried collateral of the same version that revokes nothing; the verifier's own revokes the PCK.
    let own = pki()
        .collateral_with(&sim::SimCollateralOptions {
            issued: SystemTime::now() - hour,
            validity: Duration::from_secs(30 * 24 * 3600),
            revoke_pck: true,
            evaluation_data_number: sim::collateral::SIM_TCB_EVALUATION_DATA_NUMBER,
        })
        .unwrap();
    let carried = collateral_numbered(sim::collateral::SIM_TCB_EVALUATION_DATA_NUMBER, hour);
    let err = holding(own)
        .verify(&evidence_carrying(rd, carried), &rd, SystemTime::now())
        .unwrap_err();
    assert_eq!(err.check(), "certificate-chain", "{err}");
}
