//! Starting the whole client-facing side in one call: client listeners, certificate watcher and, when
//! configured, the admin listener, all stopping on one shutdown signal.
//!
//! ```no_run
//! # async fn demo(proxy: std::sync::Arc<gateway::proxy::server::Proxy>) -> anyhow::Result<()> {
//! let (shutdown, rx) = tokio::sync::watch::channel(false);
//! let running = gateway::proxy::service::start(proxy, rx).await?;
//! // ... later:
//! shutdown.send(true)?;
//! running.wait().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::admin::{self, AdminError};
use super::config::ConfigError;
use super::server::Proxy;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A client listener could not be bound.
    #[error("client listener: {0}")]
    Listen(std::io::Error),
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

/// The running proxy.
#[derive(Debug)]
pub struct Running {
    /// The bound client listener addresses.
    pub client_addrs: Vec<SocketAddr>,
    /// The bound admin address, if any.
    pub admin_addr: Option<SocketAddr>,
    proxy: JoinHandle<()>,
    admin: Option<JoinHandle<Result<(), AdminError>>>,
}

impl Running {
    /// Waits until everything stopped after the shutdown signal (open client connections get the configured
    /// grace period).
    pub async fn wait(self) -> Result<(), AdminError> {
        let _ = self.proxy.await;
        if let Some(a) = self.admin {
            match a.await {
                Ok(r) => r?,
                Err(e) => return Err(AdminError::Io(std::io::Error::other(e))),
            }
        }
        Ok(())
    }
}

/// Binds every listener of `proxy`'s configuration and serves until `shutdown` turns true.
///
/// The admin listener is started when `admin.listen` is set, and refuses to start without a token.
pub async fn start(
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, StartError> {
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
    let client_addrs = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let (admin_addr, admin) = match admin {
        Some((listener, router)) => {
            let addr = listener.local_addr().ok();
            let mut rx = shutdown.clone();
            let task = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await
                    .map_err(AdminError::Io)
            });
            (addr, Some(task))
        }
        None => (None, None),
    };
    tracing::info!(listeners = ?client_addrs, admin = ?admin_addr, "proxy started");
    Ok(Running {
        client_addrs,
        admin_addr,
        proxy: tokio::spawn(proxy.run(listeners, shutdown)),
        admin,
    })
}
