//! The `[proxy]` section of the gateway configuration: client listeners, certificates, timeouts and limits,
//! and the admin listener. Every field has a default. The base domains and the health window are not here:
//! they are the gateway-wide `base_domains` and `tunnel.health_window_secs`, passed to
//! [`Proxy::new`](super::server::Proxy::new).
//!
//! ```toml
//! [proxy]
//! listen = ["0.0.0.0:443"]
//! certificates = [{ cert = "/etc/tee-gateway/wildcard.crt", key = "/etc/tee-gateway/wildcard.key" }]
//! connect_parallel = 3
//! connect_stagger_ms = 200
//! max_connections_per_app = 10000
//! max_connections_per_source = 256
//!
//! [proxy.admin]
//! listen = "127.0.0.1:9443"
//! token_file = "/etc/tee-gateway/admin-token"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::relay::RelayLimits;
use super::tls::CertificateFiles;
use super::upstream::ConnectPolicy;

/// Configuration of the client-facing proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Client listeners.
    pub listen: Vec<SocketAddr>,
    /// Certificates for terminated routes, chosen by the names they carry (exact or wildcard).
    pub certificates: Vec<CertificateFiles>,
    /// How often certificate files are checked for changes, in seconds.
    pub cert_reload_interval_secs: u64,
    /// Size of the TLS session cache (resumption by session id; tickets are always offered).
    pub session_cache_size: usize,
    /// Largest ClientHello accepted, in bytes of TLS records (at least 64 KiB).
    pub client_hello_max_bytes: usize,
    /// Deadline for the complete ClientHello, in milliseconds.
    pub client_hello_timeout_ms: u64,
    /// Deadline for the TLS handshake of terminated routes, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// "Connect top N": at most this many connection attempts in flight per client connection.
    pub connect_parallel: usize,
    /// Delay before trying the next instance while an attempt is pending, in milliseconds.
    pub connect_stagger_ms: u64,
    /// Limit for one connection attempt to an instance, in milliseconds.
    pub connect_attempt_timeout_ms: u64,
    /// Limit for reaching any instance, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Close a connection when no byte moved for this long, in seconds.
    pub idle_timeout_secs: u64,
    /// Close a connection after this long regardless of activity, in seconds.
    pub max_lifetime_secs: u64,
    /// Maximum concurrent client connections per app.
    pub max_connections_per_app: usize,
    /// Maximum concurrent client connections from one source address (one IPv6 /64), over all client
    /// listeners; more are closed at once.
    pub max_connections_per_source: usize,
    /// On shutdown, wait this long for open connections to finish, in seconds.
    pub shutdown_grace_secs: u64,
    /// Size of the relay buffer while data flows, in bytes.
    pub relay_buffer_bytes: usize,
    /// The admin listener.
    pub admin: AdminConfig,
}

/// The admin listener: separate address, bearer token required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API and `/metrics` listen; none disables the admin listener.
    pub listen: Option<SocketAddr>,
    /// The bearer token, given directly.
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
}

/// Why the proxy configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field has an unusable value.
    #[error("proxy.{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The admin token file could not be read.
    #[error("proxy.admin.token_file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 443))],
            certificates: Vec::new(),
            cert_reload_interval_secs: 10,
            session_cache_size: 4096,
            client_hello_max_bytes: 64 * 1024 + 4096,
            client_hello_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            connect_parallel: 3,
            connect_stagger_ms: 200,
            connect_attempt_timeout_ms: 3_000,
            connect_timeout_ms: 10_000,
            idle_timeout_secs: 900,
            max_lifetime_secs: 24 * 3600,
            max_connections_per_app: 10_000,
            max_connections_per_source: 256,
            shutdown_grace_secs: 30,
            relay_buffer_bytes: 16 * 1024,
            admin: AdminConfig::default(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl ProxyConfig {
    /// Checks the values that have no safe interpretation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one listener is required"));
        }
        if self.client_hello_max_bytes < 64 * 1024 {
            return Err(invalid("client_hello_max_bytes", "must be at least 65536"));
        }
        if self.connect_parallel == 0 {
            return Err(invalid("connect_parallel", "must be at least 1"));
        }
        if self.max_connections_per_app == 0 {
            return Err(invalid("max_connections_per_app", "must be at least 1"));
        }
        if self.max_connections_per_source == 0 {
            return Err(invalid("max_connections_per_source", "must be at least 1"));
        }
        if self.relay_buffer_bytes < 1024 {
            return Err(invalid("relay_buffer_bytes", "must be at least 1024"));
        }
        for (field, v) in [
            ("client_hello_timeout_ms", self.client_hello_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            (
                "connect_attempt_timeout_ms",
                self.connect_attempt_timeout_ms,
            ),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_lifetime_secs", self.max_lifetime_secs),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The admin bearer token, from `token` or `token_file`; `None` if neither is set.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = &self.admin.token {
            return Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty()));
        }
        match &self.admin.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()).filter(|t| !t.is_empty()))
                .map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                }),
            None => Ok(None),
        }
    }

    /// The ClientHello deadline.
    pub fn client_hello_timeout(&self) -> Duration {
        Duration::from_millis(self.client_hello_timeout_ms)
    }

    /// The TLS handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The graceful-shutdown deadline.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The upstream connection policy.
    pub fn connect_policy(&self) -> ConnectPolicy {
        ConnectPolicy {
            parallel: self.connect_parallel,
            stagger: Duration::from_millis(self.connect_stagger_ms),
            attempt_timeout: Duration::from_millis(self.connect_attempt_timeout_ms),
            total_timeout: Duration::from_millis(self.connect_timeout_ms),
        }
    }

    /// The relay limits.
    pub fn relay_limits(&self) -> RelayLimits {
        RelayLimits {
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            lifetime: Duration::from_secs(self.max_lifetime_secs),
            buffer_size: self.relay_buffer_bytes,
            release_after: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_minimal_section_with_defaults() {
        let c: ProxyConfig = toml::from_str(
            r#"
            [[certificates]]
            cert = "/etc/gw/cert.pem"
            key = "/etc/gw/key.pem"
            [admin]
            listen = "127.0.0.1:9443"
            token = "secret"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.connect_parallel, 3);
        assert_eq!(c.connect_policy().stagger, Duration::from_millis(200));
        assert_eq!(c.admin_token().unwrap().as_deref(), Some("secret"));
        assert!(c.client_hello_max_bytes >= 65536);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        assert!(toml::from_str::<ProxyConfig>("base_domain = [\"x\"]").is_err());
        let c = ProxyConfig {
            client_hello_max_bytes: 1000,
            ..ProxyConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "client_hello_max_bytes",
                ..
            })
        ));
        assert!(ProxyConfig::default().validate().is_ok());
        let no_listener = ProxyConfig {
            listen: vec![],
            ..ProxyConfig::default()
        };
        assert!(no_listener.validate().is_err());
        let empty_token = ProxyConfig {
            admin: AdminConfig {
                token: Some("  ".into()),
                ..AdminConfig::default()
            },
            ..ProxyConfig::default()
        };
        assert_eq!(empty_token.admin_token().unwrap(), None);
    }
}
