//! The gateway's WireGuard endpoint seen through the control plane's and the proxy's seams.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use protocol::control::WireGuardKey;
use protocol::tunnel::{Endpoint, PeerConfig};

use crate::control::PeerTable;
use crate::registry::HandshakeAges;

/// [`PeerTable`] and [`HandshakeAges`] over a running [`Endpoint`].
///
/// Peers get a persistent keep-alive, so an agent hears from the gateway at least that often once the gateway knows
/// its endpoint; a silent gateway tells the agent its WireGuard session is gone (for example after a restart).
#[derive(Debug, Clone)]
pub struct TunnelPeers {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// Persistent keep-alive towards each peer.
    pub keepalive: Duration,
}

impl PeerTable for TunnelPeers {
    fn upsert_peer(&self, key: &WireGuardKey, address: Ipv4Addr) -> Result<(), String> {
        let config = PeerConfig::new(*key, address).with_keepalive(self.keepalive);
        let result = if self.endpoint.peer(&config.public_key).is_some() {
            self.endpoint.update_peer(config)
        } else {
            self.endpoint.add_peer(config)
        };
        result.map_err(|e| e.to_string())
    }

    fn remove_peer(&self, key: &WireGuardKey) {
        if let Err(e) = self.endpoint.remove_peer(key) {
            tracing::debug!(error = %e, "removing a peer that is not in the tunnel");
        }
    }
}

impl HandshakeAges for TunnelPeers {
    fn since_handshake(&self, key: &WireGuardKey) -> Option<Duration> {
        let at = self.endpoint.peer(key)?.last_handshake?;
        Some(
            SystemTime::now()
                .duration_since(at)
                .unwrap_or(Duration::ZERO),
        )
    }
}
