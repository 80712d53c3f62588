//! Starting the whole client-facing side in one call: client listeners, certificate watcher and, when
//! configured, the admin listener, all stopping on one shutdown token.
//!
//! [`start`] is the one way to start them: `gateway run`, the static proxy example and the tests all go through
//! it. Its parts are critical tasks (see [`crate::supervise`]): if one ends before the shutdown token is
//! cancelled (a listener's socket fails, a task panics), the others stop too and [`Running::wait`] says which
//! and why. Dropping [`Running`] stops and aborts every part.
//!
//! ```no_run
//! # async fn demo(proxy: std::sync::Arc<gateway::proxy::server::Proxy>) -> anyhow::Result<()> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let running = gateway::proxy::service::start(proxy, &shutdown).await?;
//! // ... later:
//! shutdown.cancel();
//! running.wait().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::admin::{self, AdminError};
use super::config::ConfigError;
use super::server::Proxy;
use crate::supervise::{Critical, Stopped};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A client listener could not be bound.
    #[error("client listener: {0}")]
    Listen(#[source] std::io::Error),
    /// The admin listener could not be bound.
    #[error("admin listener {addr}: {source}")]
    AdminListen {
        /// Its address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The admin token is missing, weak or unreadable.
    #[error(transparent)]
    AdminToken(#[from] ConfigError),
    /// The admin listener refuses to start.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Why a part of the running proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A client listener's socket failed for good.
    #[error("client listener {addr}")]
    Listener {
        /// Its address.
        addr: SocketAddr,
        /// The accept error.
        #[source]
        source: std::io::Error,
    },
    /// The admin listener failed.
    #[error("admin listener")]
    Admin(#[source] AdminError),
}

/// The part names of the running proxy.
const CLIENT_LISTENER: &str = "client listener";
const CERTIFICATE_WATCHER: &str = "certificate watcher";
const ADMIN_LISTENER: &str = "admin listener";

/// The running proxy.
#[derive(Debug)]
pub struct Running {
    /// The bound client listener addresses.
    pub client_addrs: Vec<SocketAddr>,
    /// The bound admin address, if any.
    pub admin_addr: Option<SocketAddr>,
    parts: Critical<ServiceError>,
}

impl Running {
    /// Completes once the proxy begins to stop: the shutdown token was cancelled, or a part stopped by itself.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.parts.token().cancelled_owned()
    }

    /// Waits until every part stopped after the shutdown token was cancelled (open client connections get the
    /// configured grace period). If a part stopped before that, the others are stopped too and the first one is
    /// returned.
    pub async fn wait(mut self) -> Result<(), Stopped<ServiceError>> {
        self.parts.wait().await
    }
}

/// Binds every listener of `proxy`'s configuration and serves until `shutdown` is cancelled.
///
/// The admin listener is started when `admin.listen` is set, and refuses to start without a token.
pub async fn start(proxy: Arc<Proxy>, shutdown: &CancellationToken) -> Result<Running, StartError> {
    let admin = match proxy.config().admin.listen {
        Some(addr) => {
            let token = proxy.config().admin_token()?.ok_or(AdminError::NoToken)?;
            let router = admin::router(proxy.clone(), &token)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::AdminListen { addr, source })?;
            Some((listener, router))
        }
        None => None,
    };
    let listeners = proxy.bind().await.map_err(StartError::Listen)?;
    let mut parts = Critical::new(shutdown);
    let mut client_addrs = Vec::new();
    for listener in listeners {
        let addr = listener.local_addr().map_err(StartError::Listen)?;
        client_addrs.push(addr);
        let serve = proxy.clone().serve(listener, parts.token());
        parts.spawn(CLIENT_LISTENER, async move {
            serve
                .await
                .map_err(|source| ServiceError::Listener { addr, source })
        });
    }
    let watch = proxy.clone().watch_certificates(parts.token());
    parts.spawn(CERTIFICATE_WATCHER, async move {
        watch.await;
        Ok(())
    });
    let admin_addr = match admin {
        Some((listener, router)) => {
            let addr = listener.local_addr().ok();
            let serve = admin::serve_router(listener, router, parts.token());
            parts.spawn(ADMIN_LISTENER, async move {
                serve.await.map_err(ServiceError::Admin)
            });
            addr
        }
        None => None,
    };
    tracing::info!(listeners = ?client_addrs, admin = ?admin_addr, "proxy started");
    Ok(Running {
        client_addrs,
        admin_addr,
        parts,
    })
}
