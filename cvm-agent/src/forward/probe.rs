//! Probing fixed-address (`HOST:PORT`) targets with TCP connects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::port::Port;
use super::resolve::Resolver;

pub(super) async fn probe_any(candidates: &[SocketAddr], timeout: Duration) -> bool {
    for addr in candidates {
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            return true;
        }
    }
    false
}

/// Probes a fixed-address target every `interval` for as long as the forwarder runs.
pub(super) async fn probe_loop(
    port: Arc<Port>,
    resolver: Resolver,
    interval: Duration,
    timeout: Duration,
) {
    loop {
        let candidates = resolver.resolve(&port.rule.target, port.rule.port).await;
        let up = probe_any(&candidates, timeout).await;
        port.set_health(up, "no address accepted a probe connection");
        tokio::time::sleep(interval).await;
    }
}
