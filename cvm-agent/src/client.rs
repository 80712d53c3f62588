//! The registration client: one attempt against one gateway, over mutual (RA-)TLS.
//!
//! The TLS handshake comes first and must succeed before a single byte of the request is written: with TLS 1.3
//! the client verifies the gateway's certificate (and, with RA-TLS, its evidence against the gateway policy)
//! before it sends its own certificate, and the HTTP request only follows a finished handshake. A gateway whose
//! evidence is refused therefore learns neither the agent's evidence nor its WireGuard key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use protocol::control::{ErrorBody, RegisterRequest, RegisterResponse, REGISTER_PATH};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest answer accepted from a gateway.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A gateway control URL: `https://host[:port]` (default port 8443).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why a string is not a gateway control URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GatewayUrlError {
    /// Not `https://`.
    #[error("must start with https://")]
    Scheme,
    /// A path after the authority.
    #[error("must not have a path (the agent uses /v1/register)")]
    Path,
    /// `[` without `]`.
    #[error("has an unclosed [ in the host")]
    UnclosedBracket,
    /// Nothing before the port.
    #[error("has no host")]
    NoHost,
    /// A port that is not a number in 1..=65535.
    #[error("has an invalid port")]
    Port,
    /// A host that is not a valid server name.
    #[error("has an invalid host")]
    Host,
}

impl GatewayUrl {
    /// Parses `https://host[:port][/]`.
    pub fn parse(url: &str) -> Result<Self, GatewayUrlError> {
        let rest = url
            .strip_prefix("https://")
            .ok_or(GatewayUrlError::Scheme)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(GatewayUrlError::Path);
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or(GatewayUrlError::UnclosedBracket)?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (rest.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err(GatewayUrlError::NoHost);
        }
        let port = if port.is_empty() {
            8443
        } else {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(GatewayUrlError::Port)?
        };
        ServerName::try_from(host.clone()).map_err(|_| GatewayUrlError::Host)?;
        Ok(Self { host, port })
    }
}

impl std::fmt::Display for GatewayUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// Why one registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No TCP connection.
    #[error("{gateway}: cannot connect: {source}")]
    Connect {
        /// The gateway.
        gateway: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed; with RA-TLS this includes a gateway whose evidence the policy refuses. Nothing
    /// but the ClientHello was sent.
    #[error("{gateway}: TLS handshake failed (gateway not trusted or it refused us): {reason}")]
    Handshake {
        /// The gateway.
        gateway: String,
        /// The TLS error, naming the failed check.
        reason: String,
    },
    /// The TLS handshake failed because the gateway's RA-TLS certificate verified and the gateway policy refuses
    /// its claims (another measurement, another configuration digest): the gateway at this address is not one
    /// this agent may use.
    #[error("{gateway}: TLS handshake failed: the gateway policy refuses the gateway: {why}")]
    GatewayRefused {
        /// The gateway.
        gateway: String,
        /// The policy's refusal.
        why: attestation::policy::PolicyViolation,
    },
    /// The gateway answered with a typed refusal.
    #[error("{gateway}: registration refused ({status}): {body}")]
    Refused {
        /// The gateway.
        gateway: String,
        /// HTTP status.
        status: u16,
        /// The typed error.
        body: ErrorBody,
    },
    /// The gateway's answer was not what the protocol says.
    #[error("{gateway}: protocol error: {reason}")]
    Protocol {
        /// The gateway.
        gateway: String,
        /// What was wrong.
        reason: String,
    },
    /// The attempt took too long.
    #[error("{gateway}: no answer within {timeout:?}")]
    Timeout {
        /// The gateway.
        gateway: String,
        /// The limit.
        timeout: Duration,
    },
}

impl AttemptError {
    /// The gateway policy's refusal of `gateway`, when this attempt failed because of one.
    pub fn policy_refusal_of(
        &self,
        gateway: &str,
    ) -> Option<&attestation::policy::PolicyViolation> {
        match self {
            Self::GatewayRefused { gateway: g, why } if g == gateway => Some(why),
            _ => None,
        }
    }

    /// Whether the refusal is for a reason that retrying cannot fix without someone changing something (policy,
    /// configuration). The agent still retries, but logs these loudly.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refused { body, .. } if !body.error.is_transient())
    }
}

/// What the agent learned from the handshake, logged before registering.
#[derive(Debug, Clone)]
pub struct VerifiedGateway {
    /// The gateway's leaf certificate (DER).
    pub certificate: Vec<u8>,
}

/// One registration attempt: connect, handshake (verifying the gateway), then `POST /v1/register`.
///
/// `on_verified` runs after the handshake and before the request is sent (the boot sequence logs there).
pub async fn register_once(
    gateway: &GatewayUrl,
    tls: Arc<rustls::ClientConfig>,
    request: &RegisterRequest,
    timeout: Duration,
    on_verified: impl FnOnce(&VerifiedGateway),
) -> Result<RegisterResponse, AttemptError> {
    let name = gateway.to_string();
    match tokio::time::timeout(timeout, attempt(gateway, tls, request, on_verified)).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Timeout {
            gateway: name,
            timeout,
        }),
    }
}

/// The gateway policy's refusal inside a failed handshake's error, if that is why it failed.
fn policy_refusal(e: &std::io::Error) -> Option<&attestation::policy::PolicyViolation> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = tls else {
        return None;
    };
    other
        .0
        .downcast_ref::<attestation::ratls::RaTlsError>()?
        .policy_violation()
}

async fn attempt(
    gateway: &GatewayUrl,
    tls: Arc<rustls::ClientConfig>,
    request: &RegisterRequest,
    on_verified: impl FnOnce(&VerifiedGateway),
) -> Result<RegisterResponse, AttemptError> {
    let name = gateway.to_string();
    let protocol_err = |reason: String| AttemptError::Protocol {
        gateway: name.clone(),
        reason,
    };
    let tcp = TcpStream::connect((gateway.host.as_str(), gateway.port))
        .await
        .map_err(|source| AttemptError::Connect {
            gateway: name.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(gateway.host.clone())
        .map_err(|e| protocol_err(format!("invalid server name: {e}")))?;
    let stream = TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| match policy_refusal(&e) {
            Some(why) => AttemptError::GatewayRefused {
                gateway: name.clone(),
                why: why.clone(),
            },
            None => AttemptError::Handshake {
                gateway: name.clone(),
                reason: e.to_string(),
            },
        })?;
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| protocol_err("gateway presented no certificate".into()))?;
    on_verified(&VerifiedGateway { certificate });

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol_err(format!("HTTP handshake: {e}")))?;
    // The connection task belongs to this attempt: dropping the set (at the end, or with the attempt when its
    // timeout fires) aborts it.
    let mut connection = tokio::task::JoinSet::new();
    connection.spawn(conn);
    let body =
        serde_json::to_vec(request).map_err(|e| protocol_err(format!("encoding request: {e}")))?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(REGISTER_PATH)
        .header(hyper::header::HOST, gateway.host.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| protocol_err(format!("building request: {e}")))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| protocol_err(format!("sending request: {e}")));
    let result = async {
        let response = response?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| protocol_err(format!("reading answer: {e}")))?
            .to_bytes();
        if status == 200 {
            serde_json::from_slice::<RegisterResponse>(&bytes)
                .map_err(|e| protocol_err(format!("answer is not a register response: {e}")))
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Err(AttemptError::Refused {
                    gateway: name.clone(),
                    status,
                    body,
                }),
                Err(_) => Err(protocol_err(format!(
                    "status {status} with an untyped body: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))),
            }
        }
    }
    .await;
    drop(connection);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        assert_eq!(
            GatewayUrl::parse("https://198.18.0.2:9443").unwrap(),
            GatewayUrl {
                host: "198.18.0.2".into(),
                port: 9443
            }
        );
        assert_eq!(
            GatewayUrl::parse("https://gw.example.com/").unwrap().port,
            8443
        );
        assert_eq!(
            GatewayUrl::parse("https://[fd00::1]:1").unwrap().host,
            "fd00::1"
        );
        assert!(GatewayUrl::parse("http://gw:80").is_err());
        assert!(GatewayUrl::parse("https://gw:0").is_err());
        assert!(GatewayUrl::parse("https://gw:8443/v1/register").is_err());
        assert!(GatewayUrl::parse("https://:8443").is_err());
    }
}
