//! Measures TDX quote verification: the real Intel sample and `sim-tdx` quotes, uncached and through the
//! crate-wide verifier's cache. Prints one table row per case (median of the runs).
//!
//! `cargo run --example tdx_verify_bench -p attestation -- [ITERATIONS]`

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attestation::tdx::{Collateral, SimTdReport, SimTdxPki, TdxVerifier};
use attestation::{Attester, Purpose, ReportData, SimTdxAttester, TrustAnchors, Verifier};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median time of `iterations` runs of `f` after one warm-up run, or the first error `f` returns.
fn time<T, E>(iterations: usize, mut f: impl FnMut() -> Result<T, E>) -> Result<Duration, E> {
    f()?;
    let samples = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f()?;
            Ok(start.elapsed())
        })
        .collect::<Result<_, E>>()?;
    Ok(median(samples))
}

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let testdata = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/tdx");
    let quote = std::fs::read(testdata.join("tdx_quote"))?;
    let collateral = Collateral::load(&testdata.join("tdx_quote_collateral.json"))?;
    let sample_now = UNIX_EPOCH + Duration::from_secs(1_751_371_200); // 2025-07-01T12:00:00Z

    let intel = TdxVerifier::intel();
    let real = time(iterations, || intel.verify(&quote, &collateral, sample_now))?;

    let pki = std::sync::Arc::new(SimTdxPki::from_seed(b"tdx bench")?);
    let sim_root = TdxVerifier::with_root(pki.root_der().to_vec(), "bench root");
    let sim_quote = pki.quote(&SimTdReport::default())?;
    let now = SystemTime::now();
    let sim_collateral = pki.collateral(now - Duration::from_secs(60))?;
    let sim = time(iterations, || {
        sim_root.verify(&sim_quote, &sim_collateral, now)
    })?;

    let attester = SimTdxAttester::new(pki.clone(), SimTdReport::default());
    let rd = ReportData::new(Purpose::RaTlsKey, b"bench key");
    let evidence = attester.attest(&rd)?;
    let verifier = Verifier::new(TrustAnchors::production().with_sim_tdx_root(pki.root_der())?);
    let cached = time(iterations, || {
        verifier.verify(&evidence, rd.as_bytes(), now)
    })?;
    let attest = time(iterations, || attester.attest(&rd))?;

    println!("| TDX operation | median |");
    println!("|---|---|");
    println!(
        "| verify real Intel quote (dcap-qvl, uncached) | {:.0} µs |",
        real.as_secs_f64() * 1e6
    );
    println!(
        "| verify sim-tdx quote (dcap-qvl, uncached) | {:.0} µs |",
        sim.as_secs_f64() * 1e6
    );
    println!(
        "| verify sim-tdx evidence (Verifier, cached) | {:.1} µs |",
        cached.as_secs_f64() * 1e6
    );
    println!(
        "| produce sim-tdx evidence (quote + cached collateral) | {:.0} µs |",
        attest.as_secs_f64() * 1e6
    );
    Ok(())
}
