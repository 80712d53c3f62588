//! Mutual RA-TLS with TDX evidence against plain mutual TLS, on loopback, resumption disabled on both.
//!
//! Measures: verification of a sim-tdx RA-TLS certificate by a fresh verifier (cold: quote, collateral and
//! certificate chains checked) and by a warm one, then sequential full handshakes per second of
//! (a) plain mutual TLS 1.3 with P-256 certificates under a CA, (b) mutual RA-TLS, sim-tdx server and sim-snp
//! client, caches warm. Prints a table and the ratio.
//!
//! `cargo run --example ratls_tdx_handshake_bench -p attestation -- [HANDSHAKES]`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use attestation::policy::{AppPolicy, ClaimsPolicy, ForApp, GatewayPolicy};
use attestation::ratls::{
    client_config, server_config, CertOptions, RaTlsCertificate, RaTlsIdentity, RaTlsVerifier,
};
use attestation::{
    SimSnpAttester, SimSnpPki, SimTdReport, SimTdxAttester, SimTdxPki, TrustAnchors, Verifier,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const APP: &str = "deadbeef33333333";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn no_resumption(
    mut server: rustls::ServerConfig,
    mut client: rustls::ClientConfig,
) -> (rustls::ServerConfig, rustls::ClientConfig) {
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    client.resumption = rustls::client::Resumption::disabled();
    (server, client)
}

/// Plain mutual TLS: a CA issuing one server and one client certificate (P-256, like RA-TLS keys).
fn plain_configs() -> anyhow::Result<(rustls::ServerConfig, rustls::ClientConfig)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| -> anyhow::Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &issuer)?;
        Ok((
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let roots = Arc::new(roots);
    let (server_cert, server_key) = leaf("gateway.test")?;
    let (client_cert, client_key) = leaf("agent.test")?;
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()?;
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(vec![server_cert], server_key)?;
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert], client_key)?;
    Ok(no_resumption(server, client))
}

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
            "[[profile]]\nplatform = \"sim-tdx\"\nmr_td = [\"{}\"]\n",
            hex::encode([0x7d; 48])
        );
        Ok(Arc::new(GatewayPolicy::from_toml(&text)?))
    }

    fn app_policy(&self) -> anyhow::Result<Arc<dyn ClaimsPolicy>> {
        let text = format!(
            "[[apps.{APP}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
            hex::encode([0xbb; 48])
        );
        Ok(Arc::new(ForApp {
            policy: AppPolicy::from_toml(&text)?,
            app_id: APP.into(),
        }))
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

/// Sequential full handshakes (with one byte each way); returns handshakes per second.
async fn handshakes(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    n: usize,
) -> anyhow::Result<f64> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_task = tokio::spawn(async move {
        for _ in 0..n + 1 {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await?;
            tls.write_all(&b).await?;
            tls.shutdown().await.ok();
        }
        anyhow::Ok(())
    });
    let name = ServerName::try_from("gateway.test")?;
    let mut start = Instant::now();
    for i in 0..n + 1 {
        if i == 1 {
            // The first handshake warms the verifiers' caches.
            start = Instant::now();
        }
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut tls = connector.connect(name.clone(), tcp).await?;
        tls.write_all(b"x").await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
    }
    let elapsed = start.elapsed();
    server_task.await??;
    Ok(n as f64 / elapsed.as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(500);
    let sim = Sim {
        tdx: Arc::new(SimTdxPki::from_seed(b"handshake bench")?),
        snp: Arc::new(SimSnpPki::generate_small("handshake bench")?),
    };

    // Certificate verification, cold (fresh verifier each time) and warm.
    let cert = RaTlsCertificate::generate(sim.tdx_attester().as_ref(), &CertOptions::default())?;
    let cold = median(
        (0..20)
            .map(|_| {
                let v = RaTlsVerifier::new(
                    sim.verifier().expect("verifier"),
                    sim.gateway_policy().expect("policy"),
                );
                let start = Instant::now();
                v.verify_certificate(cert.cert_der(), SystemTime::now())
                    .expect("verifies");
                start.elapsed()
            })
            .collect(),
    );
    let warm_verifier = RaTlsVerifier::new(sim.verifier()?, sim.gateway_policy()?);
    warm_verifier.verify_certificate(cert.cert_der(), SystemTime::now())?;
    let warm = median(
        (0..200)
            .map(|_| {
                let start = Instant::now();
                warm_verifier
                    .verify_certificate(cert.cert_der(), SystemTime::now())
                    .expect("verifies");
                start.elapsed()
            })
            .collect(),
    );

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
