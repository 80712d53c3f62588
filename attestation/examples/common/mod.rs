//! What the RA-TLS benchmarks share: plain mutual TLS to compare with, sequential handshakes on loopback, and
//! median timings.

// Each benchmark uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Disable session resumption on both sides, so that every handshake is a full one.
pub(crate) fn no_resumption(
    mut server: rustls::ServerConfig,
    mut client: rustls::ClientConfig,
) -> (rustls::ServerConfig, rustls::ClientConfig) {
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    client.resumption = rustls::client::Resumption::disabled();
    (server, client)
}

/// Plain mutual TLS: a CA issuing one server and one client certificate (P-256, like RA-TLS keys).
pub(crate) fn plain_configs() -> anyhow::Result<(rustls::ServerConfig, rustls::ClientConfig)> {
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

/// Sequential full handshakes (with one byte each way); returns handshakes per second.
pub(crate) async fn handshakes(
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

/// The median of `v` (which must not be empty).
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median time of `n` runs of `f`, or the first error `f` returns.
pub(crate) fn time<T, E>(n: usize, mut f: impl FnMut() -> Result<T, E>) -> Result<Duration, E> {
    let samples = (0..n)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f()?);
            Ok(start.elapsed())
        })
        .collect::<Result<_, E>>()?;
    Ok(median(samples))
}

/// The gateway's policy for `app`: one `sim-snp` profile with `measurement`.
pub(crate) fn snp_app_policy(
    app: &str,
    measurement: [u8; 48],
) -> anyhow::Result<Arc<dyn attestation::policy::ClaimsPolicy>> {
    let text = format!(
        "[[apps.{app}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
        hex::encode(measurement)
    );
    Ok(Arc::new(attestation::policy::ForApp {
        policy: attestation::policy::AppPolicy::from_toml(&text)?,
        app_id: app.into(),
    }))
}

/// The first command-line argument as a count, or `default` without one.
pub(crate) fn first_arg_or(default: usize) -> anyhow::Result<usize> {
    Ok(std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(default))
}
