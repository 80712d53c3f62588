//! The state an endpoint's handle and its data-plane tasks share: configuration, socket, device, peer table,
//! inbound filter, rate limiter and the endpoint's own counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519;
use socket2::{SockAddr, Socket};

use super::config::EndpointConfig;
use super::filter::InboundFilter;
use super::peer::PeerTable;
use super::stats::EndpointCounters;
use super::tun::Tun;
use crate::key::PublicKey;

/// State shared by the endpoint's handle and its tasks.
pub(super) struct Shared {
    /// The configuration the endpoint started with.
    pub(super) config: EndpointConfig,
    /// This endpoint's public key, as boringtun wants it and as the API shows it.
    pub(super) public: x25519::PublicKey,
    pub(super) public_key: PublicKey,
    /// The UDP socket, and whether it is an IPv6 socket (IPv4 peers are then addressed as mapped).
    pub(super) udp: Socket,
    pub(super) udp_v6: bool,
    /// The TUN device and its name.
    pub(super) tun: Tun,
    pub(super) tun_name: String,
    /// The UDP address bound.
    pub(super) local_addr: SocketAddr,
    /// Every peer, read per batch and written by peer changes.
    pub(super) peers: RwLock<PeerTable>,
    /// The inbound filter in force (starts as the configured one; replaced at run time).
    pub(super) filter: RwLock<Option<InboundFilter>>,
    /// boringtun's handshake rate limiter, shared by every peer's session.
    pub(super) rate_limiter: Arc<RateLimiter>,
    /// Drops no peer can be blamed for.
    pub(super) counters: EndpointCounters,
    /// Makes the timers task panic at its next tick (tests of the endpoint's supervision).
    #[cfg(test)]
    pub(super) panic_in_timers: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(super) fn read_peers(&self) -> RwLockReadGuard<'_, PeerTable> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write_peers(&self) -> RwLockWriteGuard<'_, PeerTable> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn read_filter(&self) -> RwLockReadGuard<'_, Option<InboundFilter>> {
        self.filter.read().unwrap_or_else(|p| p.into_inner())
    }

    fn dest(&self, addr: SocketAddr) -> SockAddr {
        match (addr, self.udp_v6) {
            (SocketAddr::V4(v4), true) => SockAddr::from(SocketAddr::new(
                IpAddr::V6(v4.ip().to_ipv6_mapped()),
                v4.port(),
            )),
            _ => SockAddr::from(addr),
        }
    }

    /// Sends one datagram right away, outside the batched paths (handshakes, cookies, timers).
    /// Returns false if the kernel did not take it; the WireGuard timers retry handshakes.
    pub(super) fn send_now(&self, datagram: &[u8], to: SocketAddr) -> bool {
        match self.udp.send_to(datagram, &self.dest(to)) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(%to, error = %e, "UDP send failed");
                false
            }
        }
    }
}
