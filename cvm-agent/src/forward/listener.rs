//! The accept loop of one declared port: its listener is open while the target is up and closed while it is
//! down, and every accepted connection is relayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::port::Port;
use super::relay::relay;
use super::resolve::Resolver;
use crate::target::Target;

/// What tells an accept loop to close or reopen its listener.
enum Watch {
    /// Docker discovery: the target is down while it has no running container.
    Discovery(watch::Receiver<u64>),
    /// A fixed address: down while probes (or forwarded connections) fail.
    Health(watch::Receiver<Option<bool>>),
    /// Nothing: always listening.
    Never,
}

impl Watch {
    /// Resolves when the state may have changed; never once its source has stopped.
    async fn changed(&mut self) {
        let stopped = match self {
            Watch::Discovery(rx) => rx.changed().await.is_err(),
            Watch::Health(rx) => rx.changed().await.is_err(),
            Watch::Never => true,
        };
        if stopped {
            *self = Watch::Never;
            std::future::pending::<()>().await
        }
    }
}

/// Serves one declared port. While its target is down (a Docker target with no running container, a fixed
/// address that does not accept) the listener is closed, so connection attempts are refused by the kernel at once
/// (and the gateway's connect race moves on to another instance); it is bound again as soon as the target is up.
pub(super) async fn accept_loop(
    listener: TcpListener,
    port: Arc<Port>,
    resolver: Resolver,
    connect_timeout: Duration,
) {
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(port = port.rule.port, error = %e, "listener has no address");
            return;
        }
    };
    let mut listener = Some(listener);
    let fixed = matches!(port.rule.target, Target::Address { .. });
    let mut watch = match (&port.health, &resolver.discovery) {
        (Some(health), _) => Watch::Health(health.subscribe()),
        (None, Some(d)) => Watch::Discovery(d.subscribe()),
        (None, None) => Watch::Never,
    };
    let mut connections = JoinSet::new();
    loop {
        let down = match &mut watch {
            Watch::Never => None,
            // Unknown before the first probe: keep listening.
            Watch::Health(rx) => Some(*rx.borrow_and_update() == Some(false)),
            Watch::Discovery(_) => Some(
                resolver
                    .resolve(&port.rule.target, port.rule.port)
                    .await
                    .is_empty(),
            ),
        };
        if let Some(down) = down {
            if down && listener.is_some() {
                // A fixed target's state change is logged where it is detected.
                if !fixed {
                    tracing::info!(port = port.rule.port, target = %port.rule.target, "no running container: refusing connections");
                }
                listener = None;
            } else if !down && listener.is_none() {
                match TcpListener::bind(addr).await {
                    Ok(l) => {
                        if !fixed {
                            tracing::info!(port = port.rule.port, target = %port.rule.target, "container running: accepting connections");
                        }
                        listener = Some(l);
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot listen again; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
        }
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    let port = port.clone();
                    let resolver = resolver.clone();
                    connections.spawn(async move {
                        relay(stream, peer, &port, &resolver, connect_timeout).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly instead of spinning.
                    tracing::warn!(port = port.rule.port, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = watch.changed() => {}
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Accepts on the listener, or waits forever while there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
