//! Fixtures of the TDX unit tests: the real samples, one simulated PKI per process, a sample TD, and verifiers.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::sim::SimCollateralOptions;
use super::*;
use crate::{Attester as _, Claims, Evidence, TrustAnchors, Verifier};

pub(crate) fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/tdx")
        .join(name)
}

pub(crate) fn at(rfc3339: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
}

/// Inside the window of the real sample's collateral (2025-06-19T10:32Z .. 2025-07-19T10:00Z).
pub(crate) fn sample_now() -> SystemTime {
    at("2025-07-01T12:00:00Z")
}

/// Collateral of the simulated PKI issued a minute before `now`, valid for an hour, that revokes the PCK.
pub(crate) fn revoked_pck_collateral(now: SystemTime) -> Collateral {
    pki()
        .collateral_with(&SimCollateralOptions {
            issued: now - Duration::from_secs(60),
            validity: Duration::from_secs(3600),
            revoke_pck: true,
            evaluation_data_number: sim::collateral::SIM_TCB_EVALUATION_DATA_NUMBER,
        })
        .unwrap()
}

pub(crate) fn pki() -> &'static SimTdxPki {
    static PKI: OnceLock<SimTdxPki> = OnceLock::new();
    PKI.get_or_init(|| SimTdxPki::from_seed(b"tdx unit tests").unwrap())
}

pub(crate) fn sim_verifier() -> TdxVerifier {
    TdxVerifier::with_root(
        pki().root_der().to_vec(),
        "simulated Intel root (unit tests)",
    )
}

pub(crate) fn td() -> SimTdReport {
    SimTdReport {
        mr_td: [0x11; 48],
        rtmr: [[0x20; 48], [0x21; 48], [0x22; 48], [0x23; 48]],
        mr_config_id: [0x33; 48],
        mr_owner: [0x44; 48],
        mr_owner_config: [0x55; 48],
        report_data: [0x66; 64],
        ..SimTdReport::default()
    }
}

pub(crate) fn verify_sim(quote: &[u8]) -> Result<TdxClaims, TdxError> {
    verify_sim_full(quote).map(|v| v.claims)
}

pub(crate) fn verify_sim_full(quote: &[u8]) -> Result<VerifiedQuote, TdxError> {
    let now = SystemTime::now();
    sim_verifier().verify(
        quote,
        &pki().collateral(now - Duration::from_secs(60)).unwrap(),
        now,
    )
}

pub(crate) fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tee-gateway-tdx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn attester(td: SimTdReport) -> SimTdxAttester {
    static PKI: OnceLock<Arc<SimTdxPki>> = OnceLock::new();
    let pki = PKI.get_or_init(|| Arc::new(SimTdxPki::from_seed(b"tdx unit tests").unwrap()));
    SimTdxAttester::new(pki.clone(), td)
}

pub(crate) fn trusting() -> Verifier {
    Verifier::new(
        TrustAnchors::production()
            .with_sim_tdx_root(pki().root_pem().as_bytes())
            .unwrap(),
    )
}

/// The evidence [`attester`] produces for `td` over report data `rd`.
pub(crate) fn sim_evidence(td: SimTdReport, rd: [u8; 64]) -> Evidence {
    attester(td)
        .attest(&crate::ReportData::test_bytes(rd))
        .unwrap()
}

/// The TDX evidence (quote and collateral) for [`td`] over report data `rd`.
pub(crate) fn sim_tdx_evidence(rd: [u8; 64]) -> TdxEvidence {
    let Evidence::Tdx(ev) = sim_evidence(td(), rd) else {
        panic!("not TDX")
    };
    ev
}

pub(crate) fn claims_of(td: SimTdReport) -> Claims {
    let rd = [7u8; 64];
    let ev = sim_evidence(td, rd);
    trusting().verify(&ev, &rd, SystemTime::now()).unwrap()
}

/// Offsets inside a v4 sim quote.
pub(crate) const TD_REPORT_AT: usize = 48;
pub(crate) const MR_TD_AT: usize = TD_REPORT_AT + 16 + 48 + 48 + 8 + 8 + 8;
pub(crate) const AUTH_AT: usize = 48 + 584 + 4;
pub(crate) const AK_SIG_AT: usize = AUTH_AT;
pub(crate) const AK_AT: usize = AUTH_AT + 64;
pub(crate) const QE_REPORT_AT: usize = AUTH_AT + 64 + 64 + 2 + 4;
pub(crate) const QE_SIG_AT: usize = QE_REPORT_AT + 384;

pub(crate) fn flipped(at: usize) -> Vec<u8> {
    let mut quote = pki().quote(&td()).unwrap();
    quote[at] ^= 0x01;
    quote
}
