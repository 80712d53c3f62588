//! Helpers shared by the RA-TLS integration tests: a mutual handshake over loopback and the SNP app policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attestation::policy::{AppPolicy, ClaimsPolicy, ForApp};
use attestation::ratls::{client_config, server_config, RaTlsError, RaTlsIdentity, RaTlsVerifier};
use attestation::{Claims, VerifyError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one side of a handshake ended with: the peer's claims, or why it failed.
pub(crate) type Side = Result<Option<Arc<Claims>>, String>;

/// A server and a client handshake over loopback and exchange "ping"/"pong"; returns (server, client).
pub(crate) async fn handshake(
    server_id: Arc<RaTlsIdentity>,
    server_peers: Arc<RaTlsVerifier>,
    client_id: Arc<RaTlsIdentity>,
    client_peers: Arc<RaTlsVerifier>,
) -> (Side, Side) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(server_id, server_peers.clone()).unwrap(),
    ));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        client_config(client_id, client_peers.clone()).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok(server_peers.peer_claims(tls.get_ref().1))
    };
    let client = async {
        let tls = ping(&connector, addr).await?;
        Ok(client_peers.peer_claims(tls.get_ref().1))
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(server, client)
    })
    .await
    .expect("handshake timed out")
}

/// The gateway's policy for `app`: one `sim-snp` profile with `measurement`.
pub(crate) fn snp_app_policy(app: &str, measurement: [u8; 48]) -> Arc<dyn ClaimsPolicy> {
    let text = format!(
        "[[apps.{app}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
        hex::encode(measurement)
    );
    Arc::new(ForApp {
        policy: AppPolicy::from_toml(&text).unwrap(),
        app_id: app.into(),
    })
}

/// Connect to `addr` as a client, send "ping" and read the 4-byte answer; returns the open connection.
pub(crate) async fn ping(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("gateway.test").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(tls)
}

/// `err` refuses a certificate whose evidence is not bound to its key.
pub(crate) fn assert_binding_refused(err: &RaTlsError) {
    assert!(
        matches!(
            err,
            RaTlsError::Verify(VerifyError::ReportDataMismatch { .. })
        ),
        "{err}"
    );
    assert_eq!(err.check(), "binding");
}
