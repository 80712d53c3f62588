//! Counters and health: updated on the hot path with relaxed atomics, read as plain snapshots.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::key::PublicKey;

/// Why a packet from or to one peer was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerDrop {
    /// A decrypted packet whose source is not the peer's own tunnel address.
    SpoofedSource,
    /// A decrypted packet not addressed to this endpoint (for example, to another peer).
    WrongDestination,
    /// A decrypted packet that is not IPv4 (the tunnel carries IPv4 only).
    NotIpv4,
    /// A datagram that failed authentication, was replayed, or arrived for an expired session.
    Rejected,
    /// A packet for the peer while its network endpoint is still unknown.
    NoEndpoint,
    /// The kernel refused the packet (TUN or UDP write failed).
    WriteFailed,
    /// A decrypted packet the inbound filter does not let in (other than a connection attempt).
    Filtered,
    /// A TCP connection attempt to a port the inbound filter does not let in, answered with a reset.
    Refused,
}

/// Bytes and packets counted in one direction.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    bytes: AtomicU64,
    packets: AtomicU64,
}

impl Traffic {
    /// Counts one packet of `bytes` bytes.
    fn add(&self, bytes: usize) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// The bytes and the packets counted so far.
    pub(crate) fn load(&self) -> (u64, u64) {
        (self.bytes.load(Relaxed), self.packets.load(Relaxed))
    }
}

/// Per-peer counters, shared by the receive, send and timer tasks.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    /// What was delivered to the TUN device.
    pub(crate) rx: Traffic,
    /// What was sent to the peer.
    pub(crate) tx: Traffic,
    /// One counter per [`PeerDrop`].
    drops: [AtomicU64; 8],
    /// Wall-clock time of the last authenticated datagram, in milliseconds since the Unix epoch (0: never).
    last_authenticated_ms: AtomicU64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

impl PeerCounters {
    pub(crate) fn drop(&self, reason: PeerDrop) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.rx.add(bytes);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.tx.add(bytes);
    }

    pub(crate) fn authenticated(&self, now: SystemTime) {
        self.last_authenticated_ms.store(unix_ms(now), Relaxed);
    }

    pub(crate) fn last_authenticated(&self) -> Option<SystemTime> {
        from_unix_ms(self.last_authenticated_ms.load(Relaxed))
    }

    pub(crate) fn drops(&self) -> PeerDrops {
        let get = |r: PeerDrop| self.drops[r as usize].load(Relaxed);
        PeerDrops {
            spoofed_source: get(PeerDrop::SpoofedSource),
            wrong_destination: get(PeerDrop::WrongDestination),
            not_ipv4: get(PeerDrop::NotIpv4),
            rejected: get(PeerDrop::Rejected),
            no_endpoint: get(PeerDrop::NoEndpoint),
            write_failed: get(PeerDrop::WriteFailed),
            filtered: get(PeerDrop::Filtered),
            refused: get(PeerDrop::Refused),
        }
    }
}

/// Packets dropped for one peer, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerDrops {
    /// Decrypted packets whose source was not the peer's own tunnel address (spoofing).
    pub spoofed_source: u64,
    /// Decrypted packets not addressed to this endpoint, such as attempts to reach another peer.
    pub wrong_destination: u64,
    /// Decrypted packets that were not IPv4.
    pub not_ipv4: u64,
    /// Datagrams that failed authentication, were replayed, or belonged to no live session.
    pub rejected: u64,
    /// Packets for the peer that could not be sent because its network endpoint is not known yet.
    pub no_endpoint: u64,
    /// Packets the kernel refused to take (TUN or UDP write failed).
    pub write_failed: u64,
    /// Decrypted packets the endpoint's inbound filter does not let in (other protocols, stray segments to
    /// ports that are not let in), dropped.
    pub filtered: u64,
    /// TCP connection attempts to ports the inbound filter does not let in; each was answered with a reset.
    pub refused: u64,
}

impl PeerDrops {
    /// All drops together.
    pub fn total(&self) -> u64 {
        self.spoofed_source
            + self.wrong_destination
            + self.not_ipv4
            + self.rejected
            + self.no_endpoint
            + self.write_failed
            + self.filtered
            + self.refused
    }
}

mod unix_ms_opt {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::unix_ms(*t)),
            None => s.serialize_none(),
        }
    }
}

/// A snapshot of one peer: configuration, health and counters.
///
/// Times are wall-clock; in JSON they are milliseconds since the Unix epoch (`null`: never).
#[derive(Debug, Clone, Serialize)]
pub struct PeerStats {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The peer's one tunnel address (its allowed source, as a /32).
    pub allowed_ip: Ipv4Addr,
    /// The peer's current network endpoint: configured, or learnt from its last authenticated datagram.
    pub endpoint: Option<SocketAddr>,
    /// The persistent keep-alive interval, in milliseconds, if any.
    pub persistent_keepalive_ms: Option<u64>,
    /// When the most recent handshake with the peer completed.
    #[serde(rename = "last_handshake_ms", with = "unix_ms_opt")]
    pub last_handshake: Option<SystemTime>,
    /// When the last authenticated datagram (data, keep-alive or handshake) arrived from the peer.
    #[serde(rename = "last_authenticated_ms", with = "unix_ms_opt")]
    pub last_authenticated: Option<SystemTime>,
    /// Whether a handshake completed within the endpoint's health window.
    pub healthy: bool,
    /// Bytes of IP packets received from the peer and delivered.
    pub rx_bytes: u64,
    /// IP packets received from the peer and delivered.
    pub rx_packets: u64,
    /// Bytes of IP packets sent to the peer (before encryption).
    pub tx_bytes: u64,
    /// IP packets sent to the peer.
    pub tx_packets: u64,
    /// Dropped packets by reason.
    pub drops: PeerDrops,
}

/// What the endpoint counts that cannot be pinned on a known peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointEvent {
    /// A datagram that is not a WireGuard message or failed its MAC check.
    Malformed,
    /// An authentic-looking datagram from a key or session index of no peer.
    UnknownPeer,
    /// A packet from the TUN device to an address no peer owns.
    NoRoute,
    /// A cookie reply sent because handshakes came too fast.
    CookieReply,
    /// A merged frame the TUN device refused.
    TunWriteFailed,
}

/// The endpoint's own counters, one per [`EndpointEvent`].
#[derive(Debug, Default)]
pub(crate) struct EndpointCounters([AtomicU64; 5]);

impl EndpointCounters {
    pub(crate) fn bump(&self, event: EndpointEvent) {
        self.0[event as usize].fetch_add(1, Relaxed);
    }

    fn get(&self, event: EndpointEvent) -> u64 {
        self.0[event as usize].load(Relaxed)
    }
}

/// A snapshot of the whole endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStats {
    /// Every peer.
    pub peers: Vec<PeerStats>,
    /// Datagrams that are not WireGuard messages or failed their MAC check.
    pub malformed: u64,
    /// Authentic-looking datagrams from keys or session indexes that belong to no peer (for example, a removed
    /// peer still sending).
    pub unknown_peer: u64,
    /// Packets from the TUN device to an address no peer owns.
    pub no_route: u64,
    /// Cookie replies sent because handshakes arrived faster than the rate limit.
    pub cookie_replies: u64,
    /// Merged frames (several packets from one peer) the TUN device refused; single packets the device refuses
    /// are counted per peer as `write_failed`.
    pub tun_write_failed: u64,
}

impl EndpointCounters {
    pub(crate) fn snapshot(&self, peers: Vec<PeerStats>) -> EndpointStats {
        EndpointStats {
            peers,
            malformed: self.get(EndpointEvent::Malformed),
            unknown_peer: self.get(EndpointEvent::UnknownPeer),
            no_route: self.get(EndpointEvent::NoRoute),
            cookie_replies: self.get(EndpointEvent::CookieReply),
            tun_write_failed: self.get(EndpointEvent::TunWriteFailed),
        }
    }
}
