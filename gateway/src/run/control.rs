//! The control listener of `gateway run`: mutual RA-TLS in front of the registration routes, served until
//! shutdown or until its socket fails.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use attestation::policy::PolicyFile;
use attestation::ratls::{self, RaTlsIdentity, RaTlsVerifier};
use tokio_util::sync::CancellationToken;

use super::attest::AgentClaims;
use super::{PartError, RunError};
use crate::config::ControlConfig;
use crate::control::http::{self, router, ControlState};
use crate::control::listener::{ListenerLimits, TlsListener};
use crate::control::operator::OperatorApps;
use crate::control::rate::RateLimiter;
use crate::control::{ControlService, PeerAttestation};

/// What the control listener is made of.
pub(crate) struct ControlParts {
    /// The gateway's RA-TLS identity, presented to agents.
    pub(crate) identity: Arc<RaTlsIdentity>,
    /// Checks agents' RA-TLS certificates during the handshake.
    pub(crate) agents: Arc<RaTlsVerifier>,
    /// The operator's apps file, checked per request.
    pub(crate) policy: Arc<PolicyFile<OperatorApps>>,
    /// The registration service.
    pub(crate) service: ControlService,
}

/// Binds the control listener and returns its address and the future that serves it until `stop` is cancelled
/// (then `Ok`) or until it fails.
pub(crate) async fn start(
    config: &ControlConfig,
    parts: ControlParts,
    stop: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = Result<(), PartError>>), RunError> {
    let ControlParts {
        identity,
        agents,
        policy,
        service,
    } = parts;
    let tls =
        ratls::server_config(identity.clone(), agents.clone()).map_err(RunError::ControlTls)?;
    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::ControlBind {
            addr: config.listen,
            source,
        })?;
    let listener = TlsListener::new(
        tcp,
        tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        Arc::new(move |conn: &rustls::ServerConnection| {
            // Verified in the handshake and remembered: this is a cache hit. The instance's evidence ends at the
            // earlier of the certificate's notAfter and the end of the chain and collateral behind it.
            let der = conn.peer_certificates()?.first()?;
            let (claims, ends) = agents
                .verify_dated(der, std::time::SystemTime::now())
                .ok()?;
            Some(Arc::new(AgentClaims {
                claims,
                valid_until: u64::try_from(ends).unwrap_or(0),
                policy: policy.clone(),
            }) as Arc<dyn PeerAttestation>)
        }),
        ListenerLimits {
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs),
            max_connections: config.max_connections,
            max_connections_per_source: config.max_connections_per_source,
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        },
    )
    .map_err(RunError::ControlListener)?;
    let addr = listener.local_addr();
    let state = ControlState {
        service,
        limiter: Arc::new(RateLimiter::new(
            config.rate_limit_per_sec,
            config.rate_limit_burst,
        )),
        max_body_bytes: config.max_body_bytes,
        request_timeout: Duration::from_secs(config.request_timeout_secs),
        attestation: Arc::new(move || attestation_document(&identity)),
    };
    let header_read_timeout = Duration::from_secs(config.header_read_timeout_secs);
    Ok((addr, serve(listener, state, header_read_timeout, stop)))
}

/// Serves the control routes on `listener` until `stop` is cancelled, or until its accept task fails.
async fn serve(
    listener: TlsListener,
    state: ControlState,
    header_read_timeout: Duration,
    stop: CancellationToken,
) -> Result<(), PartError> {
    let failure = listener.failure();
    let served = http::serve(listener, router(state), header_read_timeout, stop);
    tokio::select! {
        () = served => Ok(()),
        failure = failure => Err(PartError::ControlListener(failure)),
    }
}

/// The gateway's attestation for `GET /v1/attestation`: its current RA-TLS certificate (which carries the
/// evidence) and the evidence's platform.
fn attestation_document(identity: &RaTlsIdentity) -> serde_json::Value {
    let cert = identity.certificate();
    serde_json::json!({
        "platform": cert.evidence().family(),
        "media_type": cert.evidence().media_type(),
        "certificate_pem": cert.cert_pem(),
        "not_after": cert.not_after().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::control::listener::ListenerError;
    use crate::supervise::{Critical, StopReason};

    /// A listener with a throw-away TLS identity; nothing connects to it.
    async fn listener() -> (TlsListener, std::os::fd::RawFd) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fd = tcp.as_raw_fd();
        let listener = TlsListener::new(
            tcp,
            tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            Arc::new(|_: &rustls::ServerConnection| -> Option<Arc<dyn PeerAttestation>> { None }),
            ListenerLimits {
                handshake_timeout: Duration::from_secs(1),
                max_connections: 4,
                max_connections_per_source: 4,
                idle_timeout: Duration::from_secs(10),
            },
        )
        .unwrap();
        (listener, fd)
    }

    #[tokio::test]
    async fn a_control_listener_whose_socket_fails_stops_the_gateway_naming_it() {
        let (listener, fd) = listener().await;
        let shutdown = CancellationToken::new();
        let mut parts = Critical::new(&shutdown);
        let state = ControlState {
            service: crate::control::service::tests::service().0,
            limiter: Arc::new(RateLimiter::new(10, 10)),
            max_body_bytes: 4096,
            request_timeout: Duration::from_secs(1),
            attestation: Arc::new(|| serde_json::json!({})),
        };
        parts.spawn(
            crate::run::CONTROL_LISTENER,
            serve(listener, state, Duration::from_secs(1), parts.token()),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Shutting a listening socket down makes every later accept fail with EINVAL, as a socket that broke.
        // SAFETY: `fd` is the listening socket, open as long as the listener's accept task holds it.
        assert_eq!(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) }, 0);
        let stopped = tokio::time::timeout(
            Duration::from_secs(5),
            parts.run_until(std::future::pending()),
        )
        .await
        .expect("the failure is noticed")
        .unwrap_err();
        assert_eq!(stopped.part, "control listener");
        match &stopped.reason {
            StopReason::Failed(PartError::ControlListener(e)) => match e.as_ref() {
                ListenerError::Accept { source, .. } => {
                    assert_eq!(source.raw_os_error(), Some(libc::EINVAL), "{source}")
                }
                other => panic!("{other}"),
            },
            other => panic!("{other:?}"),
        }
        let text = crate::report::error_chain(&stopped);
        assert!(text.starts_with("control listener stopped"), "{text}");
    }
}
