//! The messages of `dcap-qvl` mapped onto [`TdxError`].
//!
//! `dcap-qvl` reports verification failures as `anyhow` text only, so [`TdxError::from_qvl`] classifies them by
//! their words. The version is pinned exactly in the workspace's `Cargo.toml`; this table triggers each failure
//! with a tampered quote or collateral, calls `dcap-qvl` directly, and checks both the message it produces today
//! and our variant for it. An upgrade that rewords a message fails here, naming the case.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::tdx::collateral::unix_secs;
use crate::tdx::sim::TD_ATTR_DEBUG;
use crate::tdx::test_support::*;
use crate::tdx::*;

type Backend = dcap_qvl::configs::RustCryptoConfig;

/// One failure: what is tampered with, the text `dcap-qvl` reports and what we make of it.
struct Case {
    name: &'static str,
    quote: Vec<u8>,
    collateral: Collateral,
    now: SystemTime,
    root: Vec<u8>,
    message: &'static str,
    is: fn(&TdxError) -> bool,
}

fn qvl(quote: &[u8], collateral: &Collateral, now: SystemTime, root: &[u8]) -> anyhow::Error {
    match dcap_qvl::verify::QuoteVerifier::<Backend>::new_with_config(root.to_vec())
        .allow_debug(true)
        .verify(quote, &collateral.0, unix_secs(now))
    {
        Ok(_) => panic!("dcap-qvl accepted the quote"),
        Err(e) => e,
    }
}

fn cases() -> Vec<Case> {
    let now = SystemTime::now();
    let collateral = pki().collateral(now - Duration::from_secs(60)).unwrap();
    let quote = pki().quote(&td()).unwrap();
    let root = pki().root_der().to_vec();
    let case = |name, quote: Vec<u8>, collateral: Collateral, message, is| Case {
        name,
        quote,
        collateral,
        now,
        root: root.clone(),
        message,
        is,
    };
    let mut tcb_sig = collateral.clone();
    tcb_sig.0.tcb_info_signature[7] ^= 1;
    let mut qe_sig = collateral.clone();
    qe_sig.0.qe_identity_signature[7] ^= 1;
    let mut not_json = collateral.clone();
    not_json.0.tcb_info = "not json".into();
    let mut vendor = quote.clone();
    vendor[12] ^= 1;
    let mut version = quote.clone();
    version[0] = 9;
    let revoked = revoked_pck_collateral(now);
    let debug_off = pki()
        .quote(&SimTdReport {
            td_attributes: TD_ATTR_DEBUG,
            ..td()
        })
        .unwrap();
    let mut cases = vec![
        case(
            "garbage quote",
            b"not a quote".to_vec(),
            collateral.clone(),
            "Failed to decode quote",
            |e| matches!(e, TdxError::MalformedQuote(_)),
        ),
        case(
            "quote version",
            version,
            collateral.clone(),
            "Failed to decode quote: Unsupported quote version",
            |e| matches!(e, TdxError::MalformedQuote(_)),
        ),
        case(
            "QE vendor",
            vendor,
            collateral.clone(),
            "Unknown QE vendor ID",
            |e| matches!(e, TdxError::UnsupportedQuote(_)),
        ),
        case(
            "TCB info not JSON (told apart by type)",
            quote.clone(),
            not_json,
            "Failed to decode TcbInfo",
            |e| matches!(e, TdxError::MalformedCollateral(_)),
        ),
        case(
            "TCB info signature",
            quote.clone(),
            tcb_sig,
            "Signature is invalid for tcb_info in quote_collateral",
            |e| matches!(e, TdxError::SignatureInvalid(SignedPart::TcbInfo)),
        ),
        case(
            "QE identity signature",
            quote.clone(),
            qe_sig,
            "Signature is invalid for qe_identity in quote_collateral",
            |e| matches!(e, TdxError::SignatureInvalid(SignedPart::QeIdentity)),
        ),
        case(
            "QE report",
            flipped(QE_REPORT_AT + 300),
            collateral.clone(),
            "Signature is invalid for qe_report in quote",
            |e| matches!(e, TdxError::SignatureInvalid(SignedPart::QeReport)),
        ),
        case(
            "attestation key",
            flipped(AK_AT + 63),
            collateral.clone(),
            "QE report hash mismatch",
            |e| matches!(e, TdxError::AttestationKeyNotBound),
        ),
        case(
            "TD report",
            flipped(MR_TD_AT),
            collateral.clone(),
            "ISV enclave report signature is invalid",
            |e| matches!(e, TdxError::SignatureInvalid(SignedPart::TdReport)),
        ),
        case(
            "revoked PCK certificate",
            quote.clone(),
            revoked,
            "Failed to verify certificate chain",
            |e| matches!(e, TdxError::CertificateChain { .. }),
        ),
        case(
            "SEPT_VE_DISABLE clear",
            debug_off,
            collateral.clone(),
            "SEPT_VE_DISABLE is not enabled",
            |e| matches!(e, TdxError::TdAttributes(_)),
        ),
    ];
    // A simulated quote under Intel's root: the CRLs are not Intel's.
    cases.push(Case {
        root: INTEL_SGX_ROOT_CA_DER.to_vec(),
        ..case(
            "another root",
            quote.clone(),
            collateral.clone(),
            "CRL",
            |e| matches!(e, TdxError::CertificateChain { .. }),
        )
    });
    // Collateral past its nextUpdate.
    cases.push(Case {
        now: now + Duration::from_secs(40 * 24 * 3600),
        ..case(
            "expired collateral",
            quote.clone(),
            collateral.clone(),
            "CrlExpired",
            |e| matches!(e, TdxError::CollateralExpired { .. }),
        )
    });
    // Collateral issued after "now".
    cases.push(Case {
        now: now - Duration::from_secs(3600),
        ..case(
            "collateral from the future",
            quote.clone(),
            collateral.clone(),
            "TCBInfo issue date is in the future",
            |e| matches!(e, TdxError::CollateralNotYetValid { .. }),
        )
    });
    // The real outdated sample at a time inside its collateral's window.
    let outdated = Collateral::load(&testdata("tdx_quote_outdated_collateral.json")).unwrap();
    cases.push(Case {
        now: UNIX_EPOCH + Duration::from_secs(outdated.window(&[]).unwrap().starts.not_before + 60),
        root: INTEL_SGX_ROOT_CA_DER.to_vec(),
        ..case(
            "outdated TCB",
            std::fs::read(testdata("tdx_quote_outdated")).unwrap(),
            outdated,
            "No matching TCB level found",
            |e| matches!(e, TdxError::TcbRefused(_)),
        )
    });
    cases
}

#[test]
fn dcap_qvl_messages_map_onto_our_errors() {
    let mut failures = Vec::new();
    for case in cases() {
        let err = qvl(&case.quote, &case.collateral, case.now, &case.root);
        let text = format!("{err:#}");
        if !text.contains(case.message) {
            failures.push(format!(
                "{}: dcap-qvl now says {text:?}, the table expects {:?}",
                case.name, case.message
            ));
        }
        let ours = TdxError::from_qvl(&err, "the root");
        if !(case.is)(&ours) {
            failures.push(format!("{}: {text:?} became {ours:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
