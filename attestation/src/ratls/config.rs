//! Mutual RA-TLS `rustls` configurations (TLS 1.3 only).

use std::sync::Arc;

use rustls::{ConfigBuilder, ConfigSide, WantsVerifier, WantsVersions};

use super::{RaTlsClientCertVerifier, RaTlsIdentity, RaTlsServerCertVerifier, RaTlsVerifier};

/// The start both sides share: the `ring` provider and TLS 1.3 only. `builder_with_provider` is
/// `rustls::ServerConfig::builder_with_provider` or `rustls::ClientConfig::builder_with_provider`.
fn tls13<S: ConfigSide>(
    builder_with_provider: fn(
        Arc<rustls::crypto::CryptoProvider>,
    ) -> ConfigBuilder<S, WantsVersions>,
) -> Result<ConfigBuilder<S, WantsVerifier>, rustls::Error> {
    builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
}

/// A server configuration presenting `identity` and requiring a client RA-TLS certificate that `peers` accepts.
///
/// Sessions are never resumed (no session cache, no tickets): a resumed session would skip the verification of
/// the peer's certificate, so evidence, validity and a changed policy would not be checked again.
pub fn server_config(
    identity: Arc<RaTlsIdentity>,
    peers: Arc<RaTlsVerifier>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = tls13(rustls::ServerConfig::builder_with_provider)?
        .with_client_cert_verifier(Arc::new(RaTlsClientCertVerifier::new(peers)))
        .with_cert_resolver(identity);
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client configuration presenting `identity` and requiring a server RA-TLS certificate that `peers` accepts.
///
/// Sessions are never resumed, so every connection verifies the server's certificate against the current policy.
pub fn client_config(
    identity: Arc<RaTlsIdentity>,
    peers: Arc<RaTlsVerifier>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = tls13(rustls::ClientConfig::builder_with_provider)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RaTlsServerCertVerifier::new(peers)))
        .with_client_cert_resolver(identity);
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}
