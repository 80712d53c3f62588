//! The gateway's WireGuard endpoint: its key (kept sealed in the registry), its start, and the endpoint seen through the
//! control plane's and the proxy's seams.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use attestation::sealing::Sealer;
use protocol::control::PublicKey;
use protocol::tunnel::{Endpoint, EndpointConfig, InboundFilter, PeerConfig, PrivateKey};

use super::RunError;
use crate::config::TunnelConfig;
use crate::control::{PeerError, PeerTable};
use crate::registry::{HandshakeAges, RegistryStore};

/// Name of the gateway's WireGuard private key in the registry's secret table.
const WIREGUARD_SECRET: &str = "wireguard-private-key";

/// Loads the gateway's WireGuard key from the store, creating it on first start. The store (a file the host can
/// read) holds it sealed by `sealer`, never in plain:
///
/// - a key sealed by this TEE is unsealed and used;
/// - a plain 32-byte key (written by a gateway before sealing) is used and sealed in its place;
/// - a key this sealer cannot open (sealed in memory only by an earlier process, by another image, or altered)
///   is replaced by a new one, with a warning: agents then register again with the new public key.
pub(crate) fn wireguard_key(
    store: &mut dyn RegistryStore,
    sealer: &Sealer,
) -> Result<PrivateKey, RunError> {
    let stored = store.secret(WIREGUARD_SECRET).map_err(RunError::KeyStore)?;
    let key = match stored.as_deref() {
        Some(sealed) if sealed.starts_with(SEALED_PREFIX) => {
            match sealer.unseal(WIREGUARD_SECRET, sealed) {
                Ok(plain) => {
                    let bytes: [u8; 32] = plain
                        .as_slice()
                        .try_into()
                        .map_err(|_| RunError::KeyLength { len: plain.len() })?;
                    return Ok(PrivateKey::from_bytes(bytes));
                }
                Err(e) => {
                    tracing::warn!(error = %e, sealer = %sealer.describe(), "the stored WireGuard key cannot be unsealed; generating a new one (agents register again)");
                    rand::random()
                }
            }
        }
        Some(plain) => {
            let bytes: [u8; 32] = plain
                .try_into()
                .map_err(|_| RunError::KeyLength { len: plain.len() })?;
            tracing::info!(sealer = %sealer.describe(), "sealing the gateway's WireGuard key, stored in plain by an earlier version");
            bytes
        }
        None => {
            tracing::info!(sealer = %sealer.describe(), "generated the gateway's WireGuard key");
            rand::random()
        }
    };
    let sealed = sealer
        .seal(WIREGUARD_SECRET, &key)
        .map_err(RunError::Seal)?;
    store
        .put_secret(WIREGUARD_SECRET, &sealed)
        .map_err(RunError::KeyStore)?;
    Ok(PrivateKey::from_bytes(key))
}

/// How every sealed value starts (see [`attestation::sealing`]).
const SEALED_PREFIX: &[u8] = b"tg-seal";

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
    // The gateway serves nothing through the tunnel: CVMs may answer the connections it opens to their
    // forwarded ports (from the kernel's ephemeral ports) and its pings, and reach nothing else on its host.
    let local_ports = local_port_range();
    tracing::info!(ports = ?local_ports, "tunnel inbound: replies to the gateway's own connections only");
    endpoint_config.inbound_filter = Some(InboundFilter::replies_only(local_ports));
    let endpoint = Endpoint::start(endpoint_config)
        .await
        .map_err(RunError::Tunnel)?;
    Ok((endpoint, public))
}

/// Where the kernel of the gateway's network namespace picks the local ports of the connections it opens
/// (`net.ipv4.ip_local_port_range`); Linux's default range if it cannot be read.
fn local_port_range() -> std::ops::RangeInclusive<u16> {
    const DEFAULT: std::ops::RangeInclusive<u16> = 32768..=60999;
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return DEFAULT;
    };
    parse_port_range(&text).unwrap_or(DEFAULT)
}

/// `"32768\t60999\n"` as a range; None unless two ports, the first not above the second.
fn parse_port_range(text: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(low)), Some(Ok(high)), None) = (ports.next(), ports.next(), ports.next()) else {
        return None;
    };
    (low <= high).then_some(low..=high)
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

#[cfg(test)]
mod tests {
    use attestation::sealing::{Sealer, SealingRoot};
    use attestation::SimSnpAttester;
    use base64::Engine as _;

    use super::*;
    use crate::registry::SqliteStore;

    fn sealer(measurement: u8) -> Sealer {
        let attester =
            SimSnpAttester::new(test_support::pki::sim_snp(), [measurement; 48], [0; 32]);
        Sealer::for_attester(&attester).unwrap()
    }

    fn raw(key: &PrivateKey) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(key.to_base64())
            .unwrap()
    }

    /// The host reads the registry file: the key is not in it, yet the same TEE reads it back after a restart.
    #[test]
    fn the_registry_file_never_holds_the_key_in_plain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let key = {
            let mut store = SqliteStore::open(&path).unwrap();
            wireguard_key(&mut store, &sealer(1)).unwrap()
        };
        let file = std::fs::read(&path).unwrap();
        let secret = raw(&key);
        assert!(
            !file.windows(32).any(|w| w == secret.as_slice()),
            "the private key is in the registry file"
        );
        let mut store = SqliteStore::open(&path).unwrap();
        let again = wireguard_key(&mut store, &sealer(1)).unwrap();
        assert_eq!(
            again.public_key(),
            key.public_key(),
            "the same TEE keeps its key"
        );
    }

    #[test]
    fn a_plain_key_is_sealed_in_place_and_an_unreadable_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
        let plain = [7u8; 32];
        store.put_secret(WIREGUARD_SECRET, &plain).unwrap();
        let key = wireguard_key(&mut store, &sealer(1)).unwrap();
        assert_eq!(raw(&key), plain, "an earlier version's key is kept");
        let stored = store.secret(WIREGUARD_SECRET).unwrap().unwrap();
        assert!(stored.starts_with(b"tg-seal1") && !stored.windows(32).any(|w| w == plain));

        // Another image cannot read it: it gets a key of its own, and the store holds that one, sealed.
        let other = wireguard_key(&mut store, &sealer(2)).unwrap();
        assert_ne!(other.public_key(), key.public_key());
        assert_eq!(
            wireguard_key(&mut store, &sealer(2)).unwrap().public_key(),
            other.public_key()
        );

        // Memory-only: a new key at each start.
        let first = wireguard_key(&mut store, &Sealer::new(SealingRoot::memory_only())).unwrap();
        let second = wireguard_key(&mut store, &Sealer::new(SealingRoot::memory_only())).unwrap();
        assert_ne!(first.public_key(), second.public_key());

        store.put_secret(WIREGUARD_SECRET, &[1; 31]).unwrap();
        assert!(matches!(
            wireguard_key(&mut store, &sealer(1)),
            Err(RunError::KeyLength { len: 31 })
        ));
    }

    #[test]
    fn the_local_port_range_is_read_as_the_kernel_writes_it() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("1024 65535"), Some(1024..=65535));
        for bad in ["", "32768", "60999\t32768", "1 2 3", "x 5", "0 70000"] {
            assert_eq!(parse_port_range(bad), None, "{bad:?}");
        }
        let here = local_port_range();
        assert!(here.start() <= here.end());
    }
}
