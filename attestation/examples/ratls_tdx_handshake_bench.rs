//! Mutual RA-TLS with TDX evidence against plain mutual TLS, on loopback, resumption disabled on both.
//!
//! Measures: verification of a sim-tdx RA-TLS certificate by a fresh verifier (cold: quote, collateral and
//! certificate chains checked) and by a warm one, then sequential full handshakes per second of
//! (a) plain mutual TLS 1.3 with P-256 certificates under a CA, (b) mutual RA-TLS, sim-tdx server and sim-snp
//! client, caches warm. Prints a table and the ratio.
//!
//! `cargo run --example ratls_tdx_handshake_bench -p attestation -- [HANDSHAKES]`

mod common;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use attestation::policy::{ClaimsPolicy, GatewayPolicy};
use attestation::ratls::{
    client_config, server_config, CertOptions, RaTlsCertificate, RaTlsIdentity, RaTlsVerifier,
};
use attestation::{
    SimSnpAttester, SimSnpPki, SimTdReport, SimTdxAttester, SimTdxPki, TrustAnchors, Verifier,
};

use common::{handshakes, median, no_resumption, plain_configs, time};

const APP: &str = "deadbeef33333333";

struct Sim {
    tdx: Arc<SimTdxPki>,
    snp: Arc<SimSnpPki>,
}

impl Sim {
    fn verifier(&self) -> anyhow::Result<Arc<Verifier>> {
        Ok(Arc::new(Verifier::new(
            TrustAnchors::production()
                .with_sim_tdx_root(self.tdx.root_der())?
                .with_sim_snp_ark(self.snp.ark_der())?,
        )))
    }

    fn gateway_policy(&self) -> anyhow::Result<Arc<dyn ClaimsPolicy>> {
        let text = format!(
            "[[profile]]\nplatform = \"sim-tdx\"\nmr_td = [\"{}\"]\nrtmr0 = [\"{z}\"]\nrtmr1 = [\"{z}\"]\n\
             rtmr2 = [\"{z}\"]\n",
            hex::encode([0x7d; 48]),
            z = hex::encode([0u8; 48])
        );
        Ok(Arc::new(GatewayPolicy::from_toml(&text)?))
    }

    fn app_policy(&self) -> anyhow::Result<Arc<dyn ClaimsPolicy>> {
        common::snp_app_policy(APP, [0xbb; 48])
    }

    fn tdx_attester(&self) -> Arc<SimTdxAttester> {
        Arc::new(SimTdxAttester::new(
            self.tdx.clone(),
            SimTdReport {
                mr_td: [0x7d; 48],
                ..SimTdReport::default()
            },
        ))
    }

    fn ratls_configs(&self) -> anyhow::Result<(rustls::ServerConfig, rustls::ClientConfig)> {
        let server_id = Arc::new(RaTlsIdentity::new(
            self.tdx_attester(),
            CertOptions::default(),
        )?);
        let client_id = Arc::new(RaTlsIdentity::new(
            Arc::new(SimSnpAttester::new(self.snp.clone(), [0xbb; 48], [0; 32])),
            CertOptions::default(),
        )?);
        let server = server_config(
            server_id,
            Arc::new(RaTlsVerifier::new(self.verifier()?, self.app_policy()?)),
        )?;
        let client = client_config(
            client_id,
            Arc::new(RaTlsVerifier::new(self.verifier()?, self.gateway_policy()?)),
        )?;
        Ok(no_resumption(server, client))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n = common::first_arg_or(500)?;
    let sim = Sim {
        tdx: Arc::new(SimTdxPki::from_seed(b"handshake bench")?),
        snp: Arc::new(SimSnpPki::generate_small("handshake bench")?),
    };

    // Certificate verification, cold (fresh verifier each time) and warm.
    let cert = RaTlsCertificate::generate(sim.tdx_attester().as_ref(), &CertOptions::default())?;
    let cold = median(
        (0..20)
            .map(|_| -> anyhow::Result<_> {
                let v = RaTlsVerifier::new(sim.verifier()?, sim.gateway_policy()?);
                let start = Instant::now();
                v.verify_certificate(cert.cert_der(), SystemTime::now())?;
                Ok(start.elapsed())
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let warm_verifier = RaTlsVerifier::new(sim.verifier()?, sim.gateway_policy()?);
    warm_verifier.verify_certificate(cert.cert_der(), SystemTime::now())?;
    let warm = time(200, || {
        warm_verifier.verify_certificate(cert.cert_der(), SystemTime::now())
    })?;

    let (ps, pc) = plain_configs()?;
    let plain = handshakes(ps, pc, n).await?;
    let (rs, rc) = sim.ratls_configs()?;
    let ratls = handshakes(rs, rc, n).await?;

    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| sim-tdx RA-TLS certificate, first verification | {:.2} ms |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| sim-tdx RA-TLS certificate, cached verification | {:.1} µs |",
        warm.as_secs_f64() * 1e6
    );
    println!("| plain mutual TLS 1.3, handshakes/s | {plain:.0} |");
    println!("| mutual RA-TLS sim-tdx server / sim-snp client, handshakes/s (caches warm) | {ratls:.0} |");
    println!(
        "| RA-TLS / plain time per handshake | {:.2}x |",
        plain / ratls
    );
    Ok(())
}
