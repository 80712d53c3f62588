//! The TLS listener's self-signed certificate, generated at start-up (the passthrough tests check that the client
//! reaches the container's own TLS, not that they trust it).

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    /// Generating the certificate failed (for example, a name is not a valid DNS name).
    #[error("generating the self-signed certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS acceptor with a fresh self-signed certificate for `names`, offering ALPN `h2` and `http/1.1`, and the
/// certificate in PEM (so clients can be told to trust it).
pub(crate) fn self_signed_acceptor(
    names: Vec<String>,
) -> Result<(TlsAcceptor, String), TlsSetupError> {
    let certified = rcgen::generate_simple_self_signed(names)?;
    let pem = certified.cert.pem();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), pem))
}
