//! SEV-SNP RA-TLS costs: certificate generation, first and cached verification, and mutual RA-TLS handshakes per
//! second against plain mutual TLS with the same key type (P-256), on loopback, resumption disabled on both.
//!
//! `cargo run --release --example ratls_snp_bench -p attestation -- [HANDSHAKES]` (or `scripts/bench-attestation.sh`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attestation::policy::{ClaimsPolicy, GatewayPolicy};
use attestation::ratls::{
    client_config, server_config, CertOptions, RaTlsCertificate, RaTlsIdentity, RaTlsVerifier,
};
use attestation::{Evidence, SimSnpAttester, SimSnpPki, SnpEvidence, TrustAnchors, Verifier};

use common::{handshakes, no_resumption, plain_configs, time};

const APP: &str = "deadbeef44444444";
const SNP_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/snp");

fn verifier(pki: &SimSnpPki) -> anyhow::Result<Arc<Verifier>> {
    Ok(Arc::new(Verifier::new(
        TrustAnchors::production().with_sim_snp_ark(pki.ark_der())?,
    )))
}

fn app_policy() -> anyhow::Result<Arc<dyn ClaimsPolicy>> {
    common::snp_app_policy(APP, [0xbb; 48])
}

fn gateway_policy() -> anyhow::Result<Arc<dyn ClaimsPolicy>> {
    let text = format!(
        "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
        hex::encode([0xaa; 48])
    );
    Ok(Arc::new(GatewayPolicy::from_toml(&text)?))
}

fn ratls_configs(
    pki: &Arc<SimSnpPki>,
) -> anyhow::Result<(rustls::ServerConfig, rustls::ClientConfig)> {
    let server_id = Arc::new(RaTlsIdentity::new(
        Arc::new(SimSnpAttester::new(pki.clone(), [0xaa; 48], [0; 32])),
        CertOptions::default(),
    )?);
    let client_id = Arc::new(RaTlsIdentity::new(
        Arc::new(SimSnpAttester::new(pki.clone(), [0xbb; 48], [0; 32])),
        CertOptions::default(),
    )?);
    let server = server_config(
        server_id,
        Arc::new(RaTlsVerifier::new(verifier(pki)?, app_policy()?)),
    )?;
    let client = client_config(
        client_id,
        Arc::new(RaTlsVerifier::new(verifier(pki)?, gateway_policy()?)),
    )?;
    Ok(no_resumption(server, client))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn real_milan() -> anyhow::Result<Evidence> {
    let report =
        hex::decode(std::fs::read_to_string(format!("{SNP_DATA}/report_milan.hex"))?.trim())?;
    let vcek = std::fs::read(format!("{SNP_DATA}/vcek_milan.der"))?;
    let chain = pem::parse_many(std::fs::read(format!("{SNP_DATA}/cert_chain_milan"))?)?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    Ok(Evidence::Snp(SnpEvidence::from_parts(report, vcek, chain)?))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n = common::first_arg_or(1000)?;
    let keygen = Instant::now();
    let pki = Arc::new(SimSnpPki::generate("bench-attestation")?);
    let keygen = keygen.elapsed();
    let attester = SimSnpAttester::new(pki.clone(), [0xbb; 48], [0; 32]);

    let generation = time(50, || {
        RaTlsCertificate::generate(&attester, &CertOptions::default())
    })?;

    let cert = RaTlsCertificate::generate(&attester, &CertOptions::default())?;
    let now = SystemTime::now();
    let first = time(20, || -> anyhow::Result<_> {
        let v = RaTlsVerifier::new(verifier(&pki)?, app_policy()?);
        Ok(v.verify_certificate(cert.cert_der(), now)?)
    })?;
    // Chain cache warm, certificate never seen: what a handshake with a renewed certificate costs.
    let warm_chain = RaTlsVerifier::new(verifier(&pki)?, app_policy()?);
    warm_chain.verify_certificate(cert.cert_der(), now)?;
    let fresh: Vec<RaTlsCertificate> = (0..50)
        .map(|_| RaTlsCertificate::generate(&attester, &CertOptions::default()))
        .collect::<Result<_, _>>()?;
    let mut it = fresh.iter();
    let chain_cached = time(50, || -> anyhow::Result<_> {
        let c = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("too few certificates"))?;
        Ok(warm_chain.verify_certificate(c.cert_der(), now)?)
    })?;
    let cert_cached = time(1000, || warm_chain.verify_certificate(cert.cert_der(), now))?;

    let milan = real_milan()?;
    let milan_now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let milan_first = time(20, || Verifier::default().verify_unbound(&milan, milan_now))?;
    let warm = Verifier::default();
    warm.verify_unbound(&milan, milan_now)?;
    let milan_cached = time(200, || warm.verify_unbound(&milan, milan_now))?;

    let (ps, pc) = plain_configs()?;
    let plain = handshakes(ps, pc, n).await?;
    let (rs, rc) = ratls_configs(&pki)?;
    let ratls = handshakes(rs, rc, n).await?;

    println!("| measurement (median) | value |");
    println!("|---|---|");
    println!(
        "| simulated AMD PKI generation (2x RSA-4096 + P-384), once | {} |",
        ms(keygen)
    );
    println!(
        "| RA-TLS certificate generation (P-256 key + sim-snp report + rcgen) | {} |",
        ms(generation)
    );
    println!("| sim-snp RA-TLS certificate, first verification (RSA chain, report, binding, policy) | {} |", ms(first));
    println!(
        "| new sim-snp RA-TLS certificate, chain cached (report signature, binding, policy) | {} |",
        ms(chain_cached)
    );
    println!(
        "| same RA-TLS certificate again (time and policy only) | {:.1} µs |",
        cert_cached.as_secs_f64() * 1e6
    );
    println!(
        "| real AMD Milan report, first verification | {} |",
        ms(milan_first)
    );
    println!(
        "| real AMD Milan report, chain cached | {} |",
        ms(milan_cached)
    );
    println!("| plain mutual TLS 1.3 (P-256, CA-issued), handshakes/s | {plain:.0} |");
    println!("| mutual RA-TLS sim-snp <-> sim-snp, handshakes/s (caches warm) | {ratls:.0} |");
    println!(
        "| RA-TLS / plain time per handshake ({n} sequential handshakes each) | {:.2}x |",
        plain / ratls
    );
    Ok(())
}
