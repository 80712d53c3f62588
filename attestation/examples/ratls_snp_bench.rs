//! SEV-SNP RA-TLS costs: certificate generation, first and cached verification, and mutual RA-TLS handshakes per
//! second against plain mutual TLS with the same key type (P-256), on loopback, resumption disabled on both.
//!
//! `cargo run --release --example ratls_snp_bench -p attestation -- [HANDSHAKES]` (or `scripts/bench-attestation.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attestation::policy::{AppPolicy, ClaimsPolicy, ForApp, GatewayPolicy};
use attestation::ratls::{
    client_config, server_config, CertOptions, RaTlsCertificate, RaTlsIdentity, RaTlsVerifier,
};
use attestation::{Evidence, SimSnpAttester, SimSnpPki, SnpEvidence, TrustAnchors, Verifier};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const APP: &str = "deadbeef44444444";
const SNP_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/snp");

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

fn verifier(pki: &SimSnpPki) -> anyhow::Result<Arc<Verifier>> {
    Ok(Arc::new(Verifier::new(
        TrustAnchors::production().with_sim_snp_ark(pki.ark_der())?,
    )))
}

fn app_policy() -> anyhow::Result<Arc<dyn ClaimsPolicy>> {
    let text = format!(
        "[[apps.{APP}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
        hex::encode([0xbb; 48])
    );
    Ok(Arc::new(ForApp {
        policy: AppPolicy::from_toml(&text)?,
        app_id: APP.into(),
    }))
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

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
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
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let keygen = Instant::now();
    let pki = Arc::new(SimSnpPki::generate("bench-attestation")?);
    let keygen = keygen.elapsed();
    let attester = SimSnpAttester::new(pki.clone(), [0xbb; 48], [0; 32]);

    let generation = time(50, || {
        RaTlsCertificate::generate(&attester, &CertOptions::default()).expect("cert")
    });

    let cert = RaTlsCertificate::generate(&attester, &CertOptions::default())?;
    let now = SystemTime::now();
    let first = time(20, || {
        let v = RaTlsVerifier::new(
            verifier(&pki).expect("verifier"),
            app_policy().expect("policy"),
        );
        v.verify_certificate(cert.cert_der(), now)
            .expect("verifies")
    });
    // Chain cache warm, certificate never seen: what a handshake with a renewed certificate costs.
    let warm_chain = RaTlsVerifier::new(verifier(&pki)?, app_policy()?);
    warm_chain.verify_certificate(cert.cert_der(), now)?;
    let fresh: Vec<RaTlsCertificate> = (0..50)
        .map(|_| RaTlsCertificate::generate(&attester, &CertOptions::default()))
        .collect::<Result<_, _>>()?;
    let mut it = fresh.iter();
    let chain_cached = time(50, || {
        let c = it.next().expect("enough certificates");
        warm_chain
            .verify_certificate(c.cert_der(), now)
            .expect("verifies")
    });
    let cert_cached = time(1000, || {
        warm_chain
            .verify_certificate(cert.cert_der(), now)
            .expect("verifies")
    });

    let milan = real_milan()?;
    let milan_now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let milan_first = time(20, || {
        Verifier::default()
            .verify_unbound(&milan, milan_now)
            .expect("verifies")
    });
    let warm = Verifier::default();
    warm.verify_unbound(&milan, milan_now)?;
    let milan_cached = time(200, || {
        warm.verify_unbound(&milan, milan_now).expect("verifies")
    });

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
