//! Freshness of RA-TLS verification: certificate lifetimes are bounded, and a remembered verdict ends when the
//! certificate or the collateral behind its evidence does.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};

use super::*;
use crate::evidence::Evidence;
use crate::policy::PolicyFn;
use crate::ratls::{report_data_for_spki, CertOptions, RaTlsCertificate};
use crate::tdx::sim::collateral::SIM_TCB_EVALUATION_DATA_NUMBER;
use crate::tdx::sim::SimCollateralOptions;
use crate::tdx::test_support::{attester, pki, td, trusting};
use crate::Attester as _;

const HOUR: Duration = Duration::from_secs(3600);

fn accept_all() -> Arc<dyn ClaimsPolicy> {
    Arc::new(PolicyFn(|_: &Claims| Ok(())))
}

fn verifier() -> RaTlsVerifier {
    RaTlsVerifier::new(Arc::new(trusting()), accept_all())
}

/// A simulated TDX RA-TLS certificate issued at `issued`, valid from then for `validity`; its evidence carries
/// `collateral` when given, else the attester's own (valid for 30 days).
fn certificate(
    issued: SystemTime,
    validity: Duration,
    collateral: Option<crate::tdx::Collateral>,
) -> RaTlsCertificate {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let report_data = report_data_for_spki(&rcgen::PublicKeyData::subject_public_key_info(&key));
    let Evidence::Tdx(mut evidence) = attester(td()).attest(&report_data).unwrap() else {
        panic!("not TDX")
    };
    if let Some(c) = collateral {
        evidence.collateral = Some(c);
    }
    let options = CertOptions {
        validity,
        backdate: Duration::ZERO,
        issued_at: Some(issued),
        ..CertOptions::default()
    };
    RaTlsCertificate::build(key, Evidence::Tdx(evidence), &options).unwrap()
}

#[test]
fn a_certificate_living_48_hours_is_refused_and_one_of_24_hours_accepted() {
    let now = SystemTime::now();
    let v = verifier();
    let long = certificate(now, 48 * HOUR, None);
    let err = v.verify_certificate(long.cert_der(), now).unwrap_err();
    assert!(
        matches!(
            err,
            RaTlsError::LifetimeTooLong {
                lifetime_secs: 172_800,
                max_secs: 86_400
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.check(), "certificate-lifetime");
    assert!(
        err.to_string().contains("valid for 172800 s")
            && err.to_string().contains("maximum is 86400 s"),
        "{err}"
    );
    let day = certificate(now, 24 * HOUR, None);
    v.verify_certificate(day.cert_der(), now).unwrap();
    // The maximum is the verifier's to set.
    let strict = verifier().with_max_lifetime(12 * HOUR);
    let err = strict.verify_certificate(day.cert_der(), now).unwrap_err();
    assert_eq!(err.check(), "certificate-lifetime", "{err}");
}

#[test]
fn a_remembered_certificate_is_refused_once_it_expired() {
    let now = SystemTime::now();
    let v = verifier();
    let cert = certificate(now, HOUR, None);
    v.verify_certificate(cert.cert_der(), now).unwrap();
    // A hit inside the validity.
    v.verify_certificate(cert.cert_der(), now + HOUR / 2)
        .unwrap();
    let err = v
        .verify_certificate(cert.cert_der(), now + HOUR + Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(err, RaTlsError::Validity { .. }), "{err:?}");
}

#[test]
fn a_remembered_certificate_is_refused_once_its_collateral_expired() {
    let now = SystemTime::now();
    let v = verifier();
    // The collateral the evidence carries ends ten minutes from now; the certificate lives an hour.
    let collateral = pki()
        .collateral_with(&SimCollateralOptions {
            issued: now - Duration::from_secs(50 * 60),
            validity: HOUR,
            revoke_pck: false,
            evaluation_data_number: SIM_TCB_EVALUATION_DATA_NUMBER,
        })
        .unwrap();
    let cert = certificate(now, HOUR, Some(collateral));
    let (_, ends) = v.verify_dated(cert.cert_der(), now).unwrap();
    let ten_minutes = unix_seconds(now) + 600;
    assert!(
        (ten_minutes - 1..=ten_minutes).contains(&ends),
        "the verdict ends with the collateral: {ends} vs {ten_minutes}"
    );
    v.verify_certificate(cert.cert_der(), now + Duration::from_secs(5 * 60))
        .unwrap();
    // Twenty minutes on the certificate is still valid, its collateral is not: the remembered verdict is not used.
    let err = v
        .verify_certificate(cert.cert_der(), now + Duration::from_secs(20 * 60))
        .unwrap_err();
    assert_eq!(err.check(), "collateral", "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}
