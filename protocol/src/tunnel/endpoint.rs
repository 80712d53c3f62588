//! The endpoint: owns the UDP socket, the TUN device, the peer table and the three tasks that move packets.
//!
//! # Threads, ownership and shutdown
//!
//! The data plane runs on two threads of its own, each with a single-threaded tokio runtime, so a packet is
//! handled by the thread the kernel wakes (no hand-off between threads) and the data plane does not compete
//! with the embedding program's tasks:
//! - **`tunnel-rx`** (`receive`): UDP → decrypt → routing decisions → TUN (batches of up to 64 datagrams per
//!   `recvmmsg`);
//! - **`tunnel-tx`** (`send`): TUN → encrypt → UDP (every queued TUN packet or super-segment, then one
//!   `sendmmsg`), and next to it the **timers** task (`timers`): every 250 ms, WireGuard's timers (handshake
//!   retries, rekeying, session expiry), persistent keep-alives, the handshake rate limiter's reset, and
//!   health bookkeeping.
//!
//! What to do with each datagram and packet is decided by `route`, which does no I/O.
//!
//! The [`Endpoint`] owns the threads. [`Endpoint::shutdown`] (or a [`ShutdownHandle`]) asks them to stop
//! and waits for them; dropping the `Endpoint` asks them to stop without waiting (they finish the batch in
//! hand and exit within milliseconds). If either thread fails (an unexpected socket or device error),
//! panics, or ends, it stops the whole endpoint; [`Endpoint::stopped`] resolves then and returns the
//! [`StopReason`] (which thread, and the error or panic message). The TUN device disappears with its
//! address and routes once the threads and the `Endpoint` are gone (it is not persistent). Peer changes and
//! snapshots are synchronous and may be called from any thread while the endpoint runs.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519;

use super::config::{EndpointConfig, PeerConfig};
use super::error::TunnelError;
use super::filter::InboundFilter;
use super::peer::{Peer, PeerTable};
use super::shared::Shared;
use super::stats::{EndpointCounters, EndpointStats, PeerStats};
use super::supervisor::{either, spawn_thread, Stop, StopReason};
use super::tun::Tun;
use super::{receive, send, timers};
use crate::key::PublicKey;

/// Asks a running endpoint to stop; cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Stop);

impl ShutdownHandle {
    /// Asks the endpoint's threads to stop. They finish the batch in hand and exit.
    pub fn shutdown(&self) {
        self.0.stop(StopReason::Requested);
    }
}

/// A running WireGuard endpoint. See the module documentation for its tasks and shutdown.
pub struct Endpoint {
    shared: Arc<Shared>,
    stop: Stop,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("public_key", &self.shared.public_key)
            .field("tun", &self.shared.tun_name)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Creates the TUN device (with its address, MTU and link up) and the UDP socket, then starts the
    /// endpoint's threads. Needs `CAP_NET_ADMIN`.
    pub async fn start(config: EndpointConfig) -> Result<Endpoint, TunnelError> {
        config.validate()?;
        let tun = Tun::create(
            &config.tun_name,
            config.address,
            config.prefix_len,
            config.mtu,
            config.offload,
        )?;
        let tun_name = tun.name().to_string();
        let udp = super::udp::bind(config.listen)?;
        let local_addr = udp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(config.listen);
        let public = x25519::PublicKey::from(config.private_key.secret());
        let rate_limiter = Arc::new(RateLimiter::new(&public, config.handshake_rate_limit));
        let shared = Arc::new(Shared {
            public_key: config.private_key.public_key(),
            public,
            udp_v6: config.listen.is_ipv6(),
            udp,
            tun,
            tun_name,
            local_addr,
            peers: RwLock::new(PeerTable::default()),
            filter: RwLock::new(config.inbound_filter.clone()),
            rate_limiter,
            counters: EndpointCounters::default(),
            #[cfg(test)]
            panic_in_timers: Default::default(),
            config,
        });
        let stop = Stop::default();
        let mut endpoint = Endpoint {
            shared: Arc::clone(&shared),
            stop: stop.clone(),
            threads: Vec::with_capacity(2),
        };
        let rx = {
            let shared = Arc::clone(&shared);
            spawn_thread("tunnel-rx", stop.clone(), move || receive::task(shared))
        };
        endpoint
            .threads
            .push(rx.map_err(|e| thread_error(&shared, e))?);
        let tx = {
            let shared = Arc::clone(&shared);
            spawn_thread("tunnel-tx", stop, move || async move {
                let timer = tokio::spawn(timers::task(Arc::clone(&shared)));
                either(send::task(shared), timer).await
            })
        };
        endpoint
            .threads
            .push(tx.map_err(|e| thread_error(&shared, e))?);
        tracing::info!(
            tun = %shared.tun_name,
            listen = %shared.local_addr,
            address = %shared.config.address,
            public_key = %shared.public_key,
            "WireGuard endpoint started"
        );
        Ok(endpoint)
    }

    /// This endpoint's public key.
    pub fn public_key(&self) -> PublicKey {
        self.shared.public_key
    }

    /// The UDP address the endpoint listens on (with the actual port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.shared.tun_name
    }

    /// This endpoint's tunnel address.
    pub fn address(&self) -> Ipv4Addr {
        self.shared.config.address
    }

    /// Adds a peer at run time; the other peers are not disturbed.
    pub fn add_peer(&self, peer: PeerConfig) -> Result<(), TunnelError> {
        let s = &self.shared;
        s.write_peers().insert(
            &peer,
            &s.config.private_key,
            s.config.address,
            &s.rate_limiter,
        )?;
        tracing::info!(public_key = %peer.public_key, allowed_ip = %peer.allowed_ip, "peer added");
        Ok(())
    }

    /// Changes a peer's tunnel address, endpoint (when given) or keep-alive without ending its session.
    pub fn update_peer(&self, peer: PeerConfig) -> Result<(), TunnelError> {
        self.shared
            .write_peers()
            .update(&peer, self.shared.config.address)?;
        tracing::info!(public_key = %peer.public_key, allowed_ip = %peer.allowed_ip, "peer updated");
        Ok(())
    }

    /// Removes a peer: from now on its datagrams are dropped and nothing is sent to it. Returns its final
    /// counters.
    pub fn remove_peer(&self, key: &PublicKey) -> Result<PeerStats, TunnelError> {
        let peer = self.shared.write_peers().remove(key)?;
        tracing::info!(public_key = %key, "peer removed");
        Ok(peer.snapshot(self.shared.config.health_window, SystemTime::now()))
    }

    /// Replaces the inbound filter (None: let in everything that passes the isolation checks). Takes effect
    /// from the next batch of datagrams; established connections to ports no longer let in stop receiving.
    pub fn set_inbound_filter(&self, filter: Option<InboundFilter>) {
        match &filter {
            Some(f) => tracing::info!(tcp_ports = ?f.port_ranges(), icmp_echo = f.icmp_echo(),
                replies_only = f.is_replies_only(), "inbound filter set"),
            None => tracing::info!("inbound filter removed"),
        }
        *self
            .shared
            .filter
            .write()
            .unwrap_or_else(|p| p.into_inner()) = filter;
    }

    /// The inbound filter in force.
    pub fn inbound_filter(&self) -> Option<InboundFilter> {
        self.shared.read_filter().clone()
    }

    /// A snapshot of one peer.
    pub fn peer(&self, key: &PublicKey) -> Option<PeerStats> {
        let peer = self.shared.read_peers().by_key(key).cloned()?;
        Some(peer.snapshot(self.shared.config.health_window, SystemTime::now()))
    }

    /// A snapshot of every peer, sorted by tunnel address.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let peers: Vec<Arc<Peer>> = self.shared.read_peers().peers().cloned().collect();
        let now = SystemTime::now();
        let mut stats: Vec<PeerStats> = peers
            .iter()
            .map(|p| p.snapshot(self.shared.config.health_window, now))
            .collect();
        stats.sort_by_key(|s| s.allowed_ip);
        stats
    }

    /// Whether the peer completed a handshake within the health window (None for an unknown peer).
    pub fn is_healthy(&self, key: &PublicKey) -> Option<bool> {
        self.peer(key).map(|s| s.healthy)
    }

    /// A snapshot of every peer and of the drops no peer can be blamed for.
    pub fn stats(&self) -> EndpointStats {
        self.shared.counters.snapshot(self.peer_stats())
    }

    /// A handle that can stop the endpoint from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Stops the threads and waits for them; the TUN device is removed once this returns.
    pub async fn shutdown(mut self) {
        self.stop.stop(StopReason::Requested);
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a tunnel thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "waiting for the tunnel threads failed");
        }
    }

    /// Waits until the endpoint stops, and tells why: after a [`ShutdownHandle::shutdown`], or as soon as
    /// either data-plane thread fails, panics or ends (the other one is then stopped too).
    pub async fn stopped(&self) -> StopReason {
        self.stop.stopped().await
    }

    /// Why the endpoint stopped, or None while it runs.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.reason()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.stop(StopReason::Requested);
    }
}

fn thread_error(shared: &Shared, source: io::Error) -> TunnelError {
    TunnelError::Tun {
        name: shared.tun_name.clone(),
        action: "starting a data-plane thread",
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::key::PrivateKey;

    #[tokio::test]
    #[ignore = "needs root: creates a TUN device"]
    async fn a_panicking_data_plane_thread_stops_the_endpoint_and_says_why() {
        let config =
            EndpointConfig::new(PrivateKey::generate(), 0, Ipv4Addr::new(10, 233, 0, 1), 32);
        let endpoint = Endpoint::start(config).await.unwrap();
        assert!(endpoint.stop_reason().is_none());
        endpoint
            .shared
            .panic_in_timers
            .store(true, Ordering::Relaxed);
        let reason = tokio::time::timeout(Duration::from_secs(10), endpoint.stopped())
            .await
            .expect("the endpoint stops");
        assert!(
            matches!(&reason, StopReason::Panicked { thread: "tunnel-tx", message } if message.contains("injected")),
            "{reason:?}"
        );
        assert!(matches!(
            endpoint.stop_reason(),
            Some(StopReason::Panicked { .. })
        ));
        // The receive thread was stopped too: shutting down joins both.
        endpoint.shutdown().await;
    }
}
