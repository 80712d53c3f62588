//! Tests of [`TdxVerifier`] against the real Intel samples and the simulated PKI: round trips, tampering,
//! collateral validity, TCB levels and TD attributes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::tdx::sim::{
    SimCollateralOptions, SIM_ADVISORY, SIM_TEE_TCB_SVN_OUT_OF_DATE, TD_ATTR_DEBUG,
    TD_ATTR_SEPT_VE_DISABLE,
};
use crate::tdx::test_support::*;
use crate::tdx::*;

#[test]
fn real_quote_verifies_inside_its_collateral_window() {
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let verified = TdxVerifier::intel()
        .verify(&quote, &collateral, sample_now())
        .unwrap();
    let parsed = TdReport::parse(&quote).unwrap();
    assert_eq!(verified.report_data, parsed.report_data);
    let claims = verified.claims;
    assert_eq!(claims.tcb_status, TcbStatus::UpToDate);
    assert_eq!(claims.td.quote_version, QuoteVersion::V4);
    assert_eq!(hex::encode_upper(claims.fmspc), "B0C06F000000");
    assert!(claims.td.td_attributes.sept_ve_disable);
    assert!(!claims.td.td_attributes.debug);
    // The claims are the quote's own fields.
    assert_eq!(claims.td.mr_td, parsed.td.mr_td);
    assert_eq!(claims.td.rtmr, parsed.td.rtmr);
    assert_ne!(claims.td.mr_td, [0; 48]);
}

#[test]
fn real_quote_is_refused_once_its_collateral_expired() {
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let err = TdxVerifier::intel()
        .verify(&quote, &collateral, SystemTime::now())
        .unwrap_err();
    match &err {
        TdxError::CollateralExpired {
            item, valid_until, ..
        } => {
            assert!(valid_until.starts_with("2025-07"), "{err}");
            assert!(!item.is_empty());
        }
        other => panic!("expected CollateralExpired, got {other}"),
    }
    assert!(err.to_string().contains("collateral expired"), "{err}");
    // And before its issue date it is not valid yet.
    let err = TdxVerifier::intel()
        .verify(&quote, &collateral, at("2025-06-01T00:00:00Z"))
        .unwrap_err();
    assert!(
        matches!(err, TdxError::CollateralNotYetValid { .. }),
        "{err}"
    );
}

#[test]
fn real_collateral_window_matches_its_published_dates() {
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let w = collateral.window(&[]).unwrap();
    let (from, until) = (
        collateral::rfc3339(w.starts.not_before),
        collateral::rfc3339(w.ends.not_after),
    );
    assert!(
        from.starts_with("2025-06-19T10:32"),
        "{from} ({})",
        w.starts.item
    );
    assert!(
        until.starts_with("2025-07-19T10:00"),
        "{until} ({})",
        w.ends.item
    );
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let just = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let v = TdxVerifier::intel();
    assert!(v
        .verify(&quote, &collateral, just(w.starts.not_before))
        .is_ok());
    assert!(v
        .verify(&quote, &collateral, just(w.ends.not_after - 1))
        .is_ok());
    assert!(matches!(
        v.verify(&quote, &collateral, just(w.starts.not_before - 1)),
        Err(TdxError::CollateralNotYetValid { .. })
    ));
    assert!(matches!(
        v.verify(&quote, &collateral, just(w.ends.not_after)),
        Err(TdxError::CollateralExpired { .. })
    ));
}

#[test]
fn outdated_real_quote_is_refused_for_its_tcb() {
    let quote = std::fs::read(testdata("tdx_quote_outdated")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_outdated_collateral.json")).unwrap();
    let window = collateral.window(&[]).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(window.starts.not_before + 60);
    let err = TdxVerifier::intel()
        .verify(&quote, &collateral, now)
        .unwrap_err();
    assert!(matches!(err, TdxError::TcbRefused(_)), "{err}");
    assert!(err.to_string().contains("TCB level"), "{err}");
}

#[test]
fn real_quote_is_refused_under_a_simulated_root() {
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let err = sim_verifier()
        .verify(&quote, &collateral, sample_now())
        .unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
}

#[test]
fn sim_quotes_round_trip_v4_and_v5() {
    for version in [QuoteVersion::V4, QuoteVersion::V5] {
        let input = SimTdReport { version, ..td() };
        let quote = pki().quote(&input).unwrap();
        let verified = verify_sim_full(&quote).unwrap();
        assert_eq!(verified.report_data, input.report_data);
        let claims = verified.claims;
        assert_eq!(claims.td.quote_version, version);
        assert_eq!(claims.td.mr_td, input.mr_td);
        assert_eq!(claims.td.rtmr, input.rtmr);
        assert_eq!(claims.td.mr_config_id, input.mr_config_id);
        assert_eq!(claims.td.mr_owner, input.mr_owner);
        assert_eq!(claims.td.mr_owner_config, input.mr_owner_config);
        assert_eq!(claims.tcb_status, TcbStatus::UpToDate);
        assert!(claims.advisory_ids.is_empty());
        assert_eq!(claims.fmspc, sim::SIM_FMSPC);
    }
}

#[test]
fn td15_bodies_in_v5_quotes_carry_the_current_tcb() {
    let td15 = SimTdReport {
        version: QuoteVersion::V5,
        tee_tcb_svn2: Some(sim::SIM_TEE_TCB_SVN_UP_TO_DATE),
        ..td()
    };
    let claims = verify_sim(&pki().quote(&td15).unwrap()).unwrap();
    assert_eq!(claims.td.quote_version, QuoteVersion::V5);
    assert_eq!(claims.td.mr_td, [0x11; 48]);
    assert_eq!(claims.tcb_status, TcbStatus::UpToDate);

    // Launched on an out-of-date module, updated in place since: relaunch advised.
    let updated = SimTdReport {
        tee_tcb_svn: SIM_TEE_TCB_SVN_OUT_OF_DATE,
        ..td15.clone()
    };
    let claims = verify_sim(&pki().quote(&updated).unwrap()).unwrap();
    assert_eq!(claims.tcb_status, TcbStatus::TDRelaunchAdvised);

    // A v4 quote cannot carry a TD 1.5 body.
    let v4 = SimTdReport {
        version: QuoteVersion::V4,
        ..td15
    };
    assert!(matches!(pki().quote(&v4), Err(TdxError::SimPki(_))));
}

#[test]
fn sim_quote_is_refused_by_the_intel_root() {
    let quote = pki().quote(&td()).unwrap();
    let now = SystemTime::now();
    let err = TdxVerifier::intel()
        .verify(&quote, &pki().collateral(now).unwrap(), now)
        .unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
    assert!(err.to_string().contains("Intel SGX Root CA"), "{err}");
}

#[test]
fn sim_quote_is_refused_under_another_seed() {
    let other = SimTdxPki::from_seed(b"another seed").unwrap();
    assert_ne!(other.root_der(), pki().root_der());
    let quote = other.quote(&td()).unwrap();
    let err = verify_sim(&quote).unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
}

/// The simulated quote with the bit at `at` flipped fails the signature check of `part`.
fn assert_signature_invalid(at: usize, part: SignedPart) {
    let err = verify_sim(&flipped(at)).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(p) if p == part),
        "offset {at}: {err}"
    );
}

#[test]
fn a_flipped_bit_in_the_td_report_is_refused() {
    for at in [MR_TD_AT, TD_REPORT_AT + 583, 10] {
        let err = verify_sim(&flipped(at)).unwrap_err();
        assert!(
            matches!(
                err,
                TdxError::SignatureInvalid(SignedPart::TdReport) | TdxError::UnsupportedQuote(_)
            ),
            "offset {at}: {err}"
        );
    }
    assert_signature_invalid(MR_TD_AT, SignedPart::TdReport);
}

#[test]
fn a_flipped_bit_in_the_qe_report_is_refused() {
    assert_signature_invalid(QE_REPORT_AT + 300, SignedPart::QeReport);
}

#[test]
fn a_flipped_bit_in_a_signature_is_refused() {
    assert_signature_invalid(AK_SIG_AT + 5, SignedPart::TdReport);
    assert_signature_invalid(QE_SIG_AT + 40, SignedPart::QeReport);
}

#[test]
fn a_substituted_attestation_key_is_refused() {
    let err = verify_sim(&flipped(AK_AT + 63)).unwrap_err();
    assert!(matches!(err, TdxError::AttestationKeyNotBound), "{err}");
}

#[test]
fn truncated_or_garbage_quotes_are_malformed() {
    let quote = pki().quote(&td()).unwrap();
    for bad in [
        &quote[..100],
        &quote[..quote.len() - 10],
        &b"not a quote"[..],
        &[][..],
    ] {
        let err = verify_sim(bad).unwrap_err();
        assert!(matches!(err, TdxError::MalformedQuote(_)), "{err}");
    }
}

#[test]
fn tampered_collateral_is_refused() {
    let quote = pki().quote(&td()).unwrap();
    let now = SystemTime::now();
    let good = pki().collateral(now - Duration::from_secs(60)).unwrap();

    let mut c = good.clone();
    c.0.tcb_info = c.0.tcb_info.replace("OutOfDate", "UpToDate");
    let err = sim_verifier().verify(&quote, &c, now).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::TcbInfo)),
        "{err}"
    );

    let mut c = good.clone();
    c.0.qe_identity_signature[3] ^= 1;
    let err = sim_verifier().verify(&quote, &c, now).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::QeIdentity)),
        "{err}"
    );

    let mut c = good;
    let last = c.0.pck_crl.len() - 3;
    c.0.pck_crl[last] ^= 1;
    let err = sim_verifier().verify(&quote, &c, now).unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
}

#[test]
fn a_revoked_pck_certificate_is_refused() {
    let now = SystemTime::now();
    let collateral = revoked_pck_collateral(now);
    let err = sim_verifier()
        .verify(&pki().quote(&td()).unwrap(), &collateral, now)
        .unwrap_err();
    assert!(
        matches!(err, TdxError::CertificateChain { chain: "PCK", .. }),
        "{err}"
    );
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
}

#[test]
fn expired_sim_collateral_is_refused() {
    let issued = SystemTime::now() - Duration::from_secs(7200);
    let collateral = pki()
        .collateral_with(&SimCollateralOptions {
            issued,
            validity: Duration::from_secs(3600),
            revoke_pck: false,
            evaluation_data_number: sim::collateral::SIM_TCB_EVALUATION_DATA_NUMBER,
        })
        .unwrap();
    let err = sim_verifier()
        .verify(&pki().quote(&td()).unwrap(), &collateral, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, TdxError::CollateralExpired { .. }), "{err}");
}

#[test]
fn debug_tds_verify_with_the_debug_flag_set() {
    let quote = pki()
        .quote(&SimTdReport {
            td_attributes: TD_ATTR_SEPT_VE_DISABLE | TD_ATTR_DEBUG,
            ..td()
        })
        .unwrap();
    let claims = verify_sim(&quote).unwrap();
    assert!(claims.td.td_attributes.debug);
    let normal = verify_sim(&pki().quote(&td()).unwrap()).unwrap();
    assert!(!normal.td.td_attributes.debug);
}

#[test]
fn a_td_without_sept_ve_disable_is_refused() {
    let quote = pki()
        .quote(&SimTdReport {
            td_attributes: 0,
            ..td()
        })
        .unwrap();
    let err = verify_sim(&quote).unwrap_err();
    assert!(matches!(err, TdxError::TdAttributes(_)), "{err}");
}

#[test]
fn tcb_levels_are_reported_or_refused() {
    let quote = pki()
        .quote(&SimTdReport {
            tee_tcb_svn: SIM_TEE_TCB_SVN_OUT_OF_DATE,
            ..td()
        })
        .unwrap();
    let claims = verify_sim(&quote).unwrap();
    assert_eq!(claims.tcb_status, TcbStatus::OutOfDate);
    assert_eq!(claims.advisory_ids, vec![SIM_ADVISORY.to_string()]);

    let mut too_old = SIM_TEE_TCB_SVN_OUT_OF_DATE;
    too_old[0] -= 1;
    let err = verify_sim(
        &pki()
            .quote(&SimTdReport {
                tee_tcb_svn: too_old,
                ..td()
            })
            .unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, TdxError::TcbRefused(_)), "{err}");
}
