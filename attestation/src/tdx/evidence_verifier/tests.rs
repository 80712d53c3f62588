//! Tests of TDX evidence through the crate's [`crate::Verifier`]: platforms, trust, report data, collateral sources.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::tdx::test_support::*;
use crate::tdx::*;
use crate::{Attester, Claims, Evidence, TrustAnchors, Verifier, VerifyError};

#[test]
fn sim_tdx_evidence_verifies_as_sim_tdx() {
    let rd = [9u8; 64];
    let ev = attester(td())
        .attest(&crate::ReportData::test_bytes(rd))
        .unwrap();
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
    let ev = attester(td())
        .attest(&crate::ReportData::test_bytes(rd))
        .unwrap();
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
    let ev = attester(td())
        .attest(&crate::ReportData::test_bytes([1u8; 64]))
        .unwrap();
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
    let Evidence::Tdx(mut ev) = attester(td())
        .attest(&crate::ReportData::test_bytes(rd))
        .unwrap()
    else {
        panic!("not TDX")
    };
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
