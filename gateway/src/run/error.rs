//! Why the gateway could not start, or stopped: one variant per start-up step, each keeping its cause.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use attestation::policy::PolicyLoadError;
use attestation::ratls::RaTlsError;
use attestation::sealing::SealError;
use attestation::settings::SettingsError;
use protocol::tunnel::{StopReason, TunnelError};

use crate::control::listener::ListenerError;
use crate::proxy::limits::DrainStoreError;
use crate::proxy::server::ProxyError;
use crate::proxy::service::{ServiceError, StartError};
use crate::registry::{RegisterError, StoreError};
use crate::supervise::Stopped;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The app policy file could not be loaded.
    #[error("app policy")]
    Policy(#[source] PolicyLoadError),
    /// The verifier of agents' evidence (a simulated trust anchor, the TDX collateral source) could not be set up.
    #[error("trust anchors")]
    Verifier(#[source] SettingsError),
    /// The configuration document could not be hashed (a path that is not UTF-8).
    #[error("configuration digest")]
    ConfigDigest(#[source] attestation::config_digest::DocumentError),
    /// The gateway's attester could not be built.
    #[error("attester")]
    Attester(#[source] SettingsError),
    /// The gateway's first RA-TLS certificate could not be made.
    #[error("ra-tls identity")]
    Identity(#[source] RaTlsError),
    /// The task making the first RA-TLS certificate panicked.
    #[error("ra-tls identity: the attestation task failed")]
    IdentityTask(#[source] tokio::task::JoinError),
    /// The registry database could not be opened.
    #[error("registry {path}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: StoreError,
    },
    /// The stored instances could not be loaded.
    #[error("registry")]
    Registry(#[source] RegisterError),
    /// The gateway's WireGuard key could not be read or stored.
    #[error("wireguard key")]
    KeyStore(#[source] StoreError),
    /// The gateway's WireGuard key could not be sealed, or the platform's sealing key was unavailable.
    #[error("sealing")]
    Seal(#[source] SealError),
    /// The stored WireGuard key has the wrong length.
    #[error("wireguard key: the stored key is {len} bytes, not 32")]
    KeyLength {
        /// Its length.
        len: usize,
    },
    /// The WireGuard endpoint could not start.
    #[error("tunnel")]
    Tunnel(#[source] TunnelError),
    /// The control listener's TLS configuration was refused.
    #[error("control tls")]
    ControlTls(#[source] rustls::Error),
    /// The control listener could not be bound.
    #[error("control listener: binding {addr}")]
    ControlBind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The control listener could not start accepting.
    #[error("control listener")]
    ControlListener(#[source] std::io::Error),
    /// The proxy could not be built.
    #[error("proxy")]
    Proxy(#[source] ProxyError),
    /// The stored drain state could not be loaded.
    #[error("proxy drains")]
    ProxyDrains(#[source] DrainStoreError),
    /// The proxy's listeners could not start.
    #[error("proxy")]
    ProxyStart(#[source] StartError),
    /// A critical part stopped while the gateway ran.
    #[error(transparent)]
    Stopped(#[from] Stopped<PartError>),
}

/// Why a critical part of the running gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// The control listener stopped accepting.
    #[error("accepting failed")]
    ControlListener(#[source] Arc<ListenerError>),
    /// Serving the control API failed.
    #[error("serving failed")]
    ControlServe(#[source] std::io::Error),
    /// The WireGuard endpoint stopped: one of its threads failed, panicked or ended.
    #[error("the WireGuard endpoint stopped")]
    Tunnel(#[source] StopReason),
    /// A part of the proxy stopped.
    #[error(transparent)]
    Proxy(#[from] Stopped<ServiceError>),
}
