//! The seam between the control plane and the WireGuard endpoint.

use std::net::Ipv4Addr;

use protocol::control::PublicKey;
use protocol::tunnel::TunnelError;

/// Why a peer could not be put into the peer table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The WireGuard endpoint refused the peer.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
}

/// The gateway's WireGuard peer table as the control plane uses it.
pub trait PeerTable: Send + Sync {
    /// Adds the peer, or updates it if the key is already present, allowing exactly `address` from it.
    fn upsert_peer(&self, key: &PublicKey, address: Ipv4Addr) -> Result<(), PeerError>;
    /// Removes a peer; removing an absent peer is not an error.
    fn remove_peer(&self, key: &PublicKey);
}

/// A peer table that remembers peers in memory (tests, and gateways run without a tunnel).
#[derive(Debug, Default)]
pub struct MemoryPeers {
    peers: std::sync::Mutex<std::collections::BTreeMap<PublicKey, Ipv4Addr>>,
}

impl MemoryPeers {
    /// The current peers.
    pub fn snapshot(&self) -> std::collections::BTreeMap<PublicKey, Ipv4Addr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PeerTable for MemoryPeers {
    fn upsert_peer(&self, key: &PublicKey, address: Ipv4Addr) -> Result<(), PeerError> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*key, address);
        Ok(())
    }

    fn remove_peer(&self, key: &PublicKey) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
