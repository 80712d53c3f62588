//! Relaying one accepted connection: pick a container (round robin), connect (giving up on one that goes away),
//! then copy bytes both ways; a connection nothing accepts is reset, never left hanging.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

use super::port::Port;
use super::resolve::Resolver;
use super::PortRule;
use crate::docker::Discovery;
use crate::target::Target;

/// Resolves when discovery reports a change; never, without discovery or once discovery has stopped.
async fn changed(changes: Option<&mut tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// Closes a connection with a reset instead of an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Why one candidate address of a target was not reached.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// The connection attempt failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The address did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Discovery no longer lists the address.
    #[error("the container went away")]
    Gone,
}

/// Connects to one candidate of `rule`'s target. The attempt is given up as soon as discovery no longer lists
/// `addr` (the container stopped while its address was being tried: connecting to an address that is gone would
/// otherwise take the whole timeout).
async fn connect_while_present(
    addr: SocketAddr,
    rule: &PortRule,
    resolver: &Resolver,
    mut changes: Option<&mut tokio::sync::watch::Receiver<u64>>,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let connect = tokio::time::timeout(timeout, TcpStream::connect(addr));
    tokio::pin!(connect);
    loop {
        tokio::select! {
            result = &mut connect => return match result {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(ConnectError::Io(e)),
                Err(_) => Err(ConnectError::Timeout(timeout)),
            },
            _ = changed(changes.as_deref_mut()) => {
                if !resolver.resolve(&rule.target, rule.port).await.contains(&addr) {
                    return Err(ConnectError::Gone);
                }
            }
        }
    }
}

pub(super) async fn relay(
    mut inbound: TcpStream,
    peer: SocketAddr,
    port: &Port,
    resolver: &Resolver,
    connect_timeout: Duration,
) {
    let rule = &port.rule;
    // Subscribed before resolving, so a container that goes away from here on is noticed.
    let mut changes = match &rule.target {
        Target::Address { .. } => None,
        _ => resolver.discovery.as_ref().map(Discovery::subscribe),
    };
    let candidates = resolver.resolve(&rule.target, rule.port).await;
    if candidates.is_empty() {
        if port.health.is_some() {
            port.set_health(false, "the target's host name did not resolve");
        } else {
            tracing::warn!(port = rule.port, target = %rule.target, %peer, "no running container for the target: resetting");
        }
        return reset(inbound);
    }
    let start = port.next.fetch_add(1, Ordering::Relaxed);
    let mut outbound = None;
    for i in 0..candidates.len() {
        let addr = candidates[(start + i) % candidates.len()];
        match connect_while_present(addr, rule, resolver, changes.as_mut(), connect_timeout).await {
            Ok(s) => {
                outbound = Some(s);
                break;
            }
            Err(reason) => tracing::debug!(%addr, %reason, "container not reached"),
        }
    }
    let Some(mut outbound) = outbound else {
        if port.health.is_some() {
            // Down at once: the listener closes, so the next connections are refused until a probe succeeds.
            port.set_health(false, "a forwarded connection was not accepted");
            tracing::debug!(port = rule.port, %peer, "target did not accept: resetting");
        } else {
            tracing::warn!(port = rule.port, target = %rule.target, %peer, "no container accepted: resetting");
        }
        return reset(inbound);
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
        Ok((up, down)) => tracing::debug!(port = rule.port, %peer, up, down, "connection closed"),
        Err(e) => {
            // One side reset or failed: pass the failure on as a reset rather than a clean close.
            tracing::debug!(port = rule.port, %peer, error = %e, "connection aborted");
            reset(inbound);
            reset(outbound);
        }
    }
}
