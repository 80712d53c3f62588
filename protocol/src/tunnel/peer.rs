//! Peers and the peer table: one [`Peer`] per public key, found by key (handshake initiations), by receiver
//! index (every other message) and by tunnel address (packets from the TUN device).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;

use super::config::PeerConfig;
use super::error::TunnelError;
use super::stats::{PeerCounters, PeerStats};
use crate::key::{PrivateKey, PublicKey};

/// Receiver indexes are 24 bits: boringtun keeps the low 8 bits of a session index for the session.
const INDEX_LIMIT: u32 = 1 << 24;

/// The mutable part of a peer, behind one lock taken once per packet run.
pub(crate) struct PeerState {
    pub(crate) tunn: Tunn,
    pub(crate) allowed_ip: Ipv4Addr,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) keepalive: Option<Duration>,
    /// When anything (data, keep-alive, handshake) was last sent to the peer.
    pub(crate) last_sent: Instant,
    /// The last completed handshake, kept when boringtun forgets it between a session's expiry and the next.
    pub(crate) last_handshake: Option<SystemTime>,
}

impl PeerState {
    /// Refreshes `last_handshake` from boringtun's session timer.
    pub(crate) fn refresh_handshake(&mut self, now: SystemTime) {
        if let Some(age) = self.tunn.time_since_last_handshake() {
            let at = now.checked_sub(age).unwrap_or(now);
            // boringtun's clock has timer-tick resolution: do not let the reported time wobble backwards.
            if self
                .last_handshake
                .is_none_or(|prev| at > prev + Duration::from_millis(500))
            {
                self.last_handshake = Some(at);
            }
        }
    }
}

/// One peer.
pub(crate) struct Peer {
    pub(crate) key: PublicKey,
    pub(crate) index: u32,
    state: Mutex<PeerState>,
    pub(crate) counters: PeerCounters,
}

impl Peer {
    pub(crate) fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A panic while holding the lock leaves the state usable (counters and a Tunn); keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self, health_window: Duration, now: SystemTime) -> PeerStats {
        let mut st = self.lock();
        st.refresh_handshake(now);
        let c = &self.counters;
        let (rx_bytes, rx_packets) = c.rx.load();
        let (tx_bytes, tx_packets) = c.tx.load();
        PeerStats {
            public_key: self.key,
            allowed_ip: st.allowed_ip,
            endpoint: st.endpoint,
            persistent_keepalive_ms: st.keepalive.map(|k| k.as_millis() as u64),
            last_handshake: st.last_handshake,
            last_authenticated: c.last_authenticated(),
            healthy: st
                .last_handshake
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() <= health_window),
            rx_bytes,
            rx_packets,
            tx_bytes,
            tx_packets,
            drops: c.drops(),
        }
    }
}

/// Every peer, by key, receiver index and tunnel address.
#[derive(Default)]
pub(crate) struct PeerTable {
    by_key: HashMap<PublicKey, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    by_addr: HashMap<Ipv4Addr, Arc<Peer>>,
}

impl PeerTable {
    pub(crate) fn by_key(&self, key: &PublicKey) -> Option<&Arc<Peer>> {
        self.by_key.get(key)
    }

    /// The peer owning a receiver index from a handshake response, cookie reply or data message.
    pub(crate) fn by_receiver_index(&self, receiver_index: u32) -> Option<&Arc<Peer>> {
        self.by_index.get(&(receiver_index >> 8))
    }

    pub(crate) fn by_addr(&self, addr: Ipv4Addr) -> Option<&Arc<Peer>> {
        self.by_addr.get(&addr)
    }

    pub(crate) fn peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.by_key.values()
    }

    fn check_addr(&self, cfg: &PeerConfig, own_addr: Ipv4Addr) -> Result<(), TunnelError> {
        if cfg.allowed_ip == own_addr {
            return Err(TunnelError::OwnAddress(own_addr));
        }
        match self.by_addr.get(&cfg.allowed_ip) {
            Some(owner) if owner.key != cfg.public_key => Err(TunnelError::AddressInUse {
                addr: cfg.allowed_ip,
                owner: owner.key,
            }),
            _ => Ok(()),
        }
    }

    fn free_index(&self) -> Result<u32, TunnelError> {
        if self.by_index.len() as u32 >= INDEX_LIMIT - 1 {
            return Err(TunnelError::IndexesExhausted);
        }
        loop {
            let candidate = rand::random::<u32>() % INDEX_LIMIT;
            if candidate != 0 && !self.by_index.contains_key(&candidate) {
                return Ok(candidate);
            }
        }
    }

    /// Adds a new peer.
    pub(crate) fn insert(
        &mut self,
        cfg: &PeerConfig,
        own_key: &PrivateKey,
        own_addr: Ipv4Addr,
        rate_limiter: &Arc<RateLimiter>,
    ) -> Result<(), TunnelError> {
        cfg.validate()?;
        if cfg.public_key == own_key.public_key() {
            return Err(TunnelError::OwnKey(cfg.public_key));
        }
        if self.by_key.contains_key(&cfg.public_key) {
            return Err(TunnelError::DuplicatePeer(cfg.public_key));
        }
        self.check_addr(cfg, own_addr)?;
        let index = self.free_index()?;
        let tunn = Tunn::new(
            own_key.secret().clone(),
            cfg.public_key.to_x25519(),
            None,
            // Keep-alives are sent by the endpoint's timer task, so their interval can change at run time.
            None,
            index,
            Some(Arc::clone(rate_limiter)),
        );
        let peer = Arc::new(Peer {
            key: cfg.public_key,
            index,
            state: Mutex::new(PeerState {
                tunn,
                allowed_ip: cfg.allowed_ip,
                endpoint: cfg.endpoint,
                keepalive: cfg.persistent_keepalive,
                last_sent: Instant::now(),
                last_handshake: None,
            }),
            counters: PeerCounters::default(),
        });
        self.by_key.insert(peer.key, Arc::clone(&peer));
        self.by_index.insert(index, Arc::clone(&peer));
        self.by_addr.insert(cfg.allowed_ip, peer);
        Ok(())
    }

    /// Changes a peer's address, endpoint or keep-alive, keeping its session and counters.
    pub(crate) fn update(
        &mut self,
        cfg: &PeerConfig,
        own_addr: Ipv4Addr,
    ) -> Result<(), TunnelError> {
        cfg.validate()?;
        let peer = self
            .by_key
            .get(&cfg.public_key)
            .cloned()
            .ok_or(TunnelError::UnknownPeer(cfg.public_key))?;
        self.check_addr(cfg, own_addr)?;
        let mut st = peer.lock();
        if st.allowed_ip != cfg.allowed_ip {
            self.by_addr.remove(&st.allowed_ip);
            self.by_addr.insert(cfg.allowed_ip, Arc::clone(&peer));
            st.allowed_ip = cfg.allowed_ip;
        }
        if cfg.endpoint.is_some() {
            st.endpoint = cfg.endpoint;
        }
        st.keepalive = cfg.persistent_keepalive;
        Ok(())
    }

    /// Removes a peer; its sessions end with it.
    pub(crate) fn remove(&mut self, key: &PublicKey) -> Result<Arc<Peer>, TunnelError> {
        let peer = self
            .by_key
            .remove(key)
            .ok_or(TunnelError::UnknownPeer(*key))?;
        self.by_index.remove(&peer.index);
        let addr = peer.lock().allowed_ip;
        self.by_addr.remove(&addr);
        Ok(peer)
    }
}
