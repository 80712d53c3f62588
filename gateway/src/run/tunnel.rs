//! The gateway's WireGuard endpoint: its key (kept in the registry), its start, and the endpoint seen through the
//! control plane's and the proxy's seams.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use protocol::control::PublicKey;
use protocol::tunnel::{Endpoint, EndpointConfig, PeerConfig, PrivateKey};

use super::RunError;
use crate::config::TunnelConfig;
use crate::control::{PeerError, PeerTable};
use crate::registry::{HandshakeAges, RegistryStore, SqliteStore};

/// Name of the gateway's WireGuard private key in the registry's secret table.
const WIREGUARD_SECRET: &str = "wireguard-private-key";

/// Loads the gateway's WireGuard key from the store, creating it on first start.
pub(crate) fn wireguard_key(store: &mut SqliteStore) -> Result<PrivateKey, RunError> {
    match store.secret(WIREGUARD_SECRET).map_err(RunError::KeyStore)? {
        Some(bytes) => {
            let bytes: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| RunError::KeyLength { len: bytes.len() })?;
            Ok(PrivateKey::from_bytes(bytes))
        }
        None => {
            let bytes: [u8; 32] = rand::random();
            store
                .put_secret(WIREGUARD_SECRET, &bytes)
                .map_err(RunError::KeyStore)?;
            tracing::info!("generated the gateway's WireGuard key");
            Ok(PrivateKey::from_bytes(bytes))
        }
    }
}

/// Starts the WireGuard endpoint of `config` with `key`; returns it and the gateway's public key as the control
/// plane announces it.
pub(crate) async fn start_endpoint(
    config: &TunnelConfig,
    key: PrivateKey,
) -> Result<(Endpoint, PublicKey), RunError> {
    let public = key.public_key();
    let mut endpoint_config = EndpointConfig::new(
        key,
        config.listen_port,
        config.gateway_address,
        config.network.prefix_len(),
    );
    endpoint_config.tun_name = config.interface.to_string();
    endpoint_config.mtu = config.mtu.get();
    endpoint_config.health_window = config.health_window();
    let endpoint = Endpoint::start(endpoint_config)
        .await
        .map_err(RunError::Tunnel)?;
    Ok((endpoint, public))
}

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
    fn upsert_peer(&self, key: &PublicKey, address: Ipv4Addr) -> Result<(), PeerError> {
        let config = PeerConfig::new(*key, address).with_keepalive(self.keepalive);
        let result = if self.endpoint.peer(&config.public_key).is_some() {
            self.endpoint.update_peer(config)
        } else {
            self.endpoint.add_peer(config)
        };
        Ok(result?)
    }

    fn remove_peer(&self, key: &PublicKey) {
        if let Err(e) = self.endpoint.remove_peer(key) {
            tracing::debug!(error = %e, "removing a peer that is not in the tunnel");
        }
    }
}

impl HandshakeAges for TunnelPeers {
    fn since_handshake(&self, key: &PublicKey) -> Option<Duration> {
        let at = self.endpoint.peer(key)?.last_handshake?;
        Some(
            SystemTime::now()
                .duration_since(at)
                .unwrap_or(Duration::ZERO),
        )
    }
}
