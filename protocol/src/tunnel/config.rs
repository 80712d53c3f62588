//! Configuration of an endpoint and of its peers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::error::TunnelError;
use super::filter::InboundFilter;
use crate::key::{PrivateKey, PublicKey};

/// The default tunnel MTU: a 1500-byte path minus IPv6 (40), UDP (8) and WireGuard (32) overhead.
pub const DEFAULT_MTU: u16 = 1420;
/// The default health window: a peer is healthy if a handshake completed this recently.
pub const DEFAULT_HEALTH_WINDOW: Duration = Duration::from_secs(300);
/// WireGuard's `REKEY_AFTER_TIME`: a peer with a persistent keep-alive renews its session this often even when
/// idle, so its handshake time stays within the health window.
pub const DEFAULT_REKEY_AFTER: Duration = Duration::from_secs(120);
/// How often peer timers run (WireGuard's timers have a resolution of about this).
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// The smallest and largest MTU the endpoint accepts.
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 576..=2000;

/// Refuses an address that cannot be one host's tunnel address (`whose` names the host in the message).
fn check_host_address(addr: Ipv4Addr, whose: &str) -> Result<(), TunnelError> {
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(TunnelError::Config(format!(
            "{addr} cannot be {whose} tunnel address"
        )));
    }
    Ok(())
}

/// How to run a tunnel endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// This endpoint's static private key.
    pub private_key: PrivateKey,
    /// The UDP address to listen on (port 0: any free port; see `Endpoint::local_addr`).
    pub listen: SocketAddr,
    /// This endpoint's address inside the tunnel.
    pub address: Ipv4Addr,
    /// The prefix length routed into the tunnel (for example 8 for 10.0.0.0/8 on the gateway).
    pub prefix_len: u8,
    /// The TUN device's MTU.
    pub mtu: u16,
    /// The TUN device's name (empty: the kernel picks `tunN`).
    pub tun_name: String,
    /// A peer is healthy if a handshake completed within this window.
    pub health_window: Duration,
    /// A peer with a persistent keep-alive renews its session after this long even when idle.
    pub rekey_after: Duration,
    /// Handshake messages per second accepted before senders must prove their address with a cookie.
    pub handshake_rate_limit: u64,
    /// Let the kernel hand over TCP super-segments that the endpoint cuts up itself (TSO on the TUN device):
    /// far fewer system calls and a cheaper TCP stack on the sending side.
    pub offload: bool,
    /// What may reach the TUN device from the tunnel besides the isolation checks (None: everything that
    /// passes them). The agent lets in only its declared TCP ports; see [`InboundFilter`].
    pub inbound_filter: Option<InboundFilter>,
}

impl EndpointConfig {
    /// A configuration with the defaults: listen on `0.0.0.0:listen_port`, MTU 1420, health window 300 s.
    pub fn new(
        private_key: PrivateKey,
        listen_port: u16,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Self {
        EndpointConfig {
            private_key,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen_port),
            address,
            prefix_len,
            mtu: DEFAULT_MTU,
            tun_name: String::new(),
            health_window: DEFAULT_HEALTH_WINDOW,
            rekey_after: DEFAULT_REKEY_AFTER,
            handshake_rate_limit: 100,
            offload: true,
            inbound_filter: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), TunnelError> {
        if !MTU_RANGE.contains(&self.mtu) {
            return Err(TunnelError::Config(format!(
                "MTU {} is outside {}..={}",
                self.mtu,
                MTU_RANGE.start(),
                MTU_RANGE.end()
            )));
        }
        if self.prefix_len > 32 {
            return Err(TunnelError::Config(format!(
                "prefix length /{} is longer than /32",
                self.prefix_len
            )));
        }
        check_host_address(self.address, "the endpoint's")?;
        if self.rekey_after < Duration::from_secs(1) {
            return Err(TunnelError::Config(
                "rekey_after must be at least 1 s".into(),
            ));
        }
        if self.handshake_rate_limit == 0 {
            return Err(TunnelError::Config(
                "handshake_rate_limit must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// One peer: its key, its single tunnel address, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// The peer's one tunnel address: packets from the peer must come from it, packets to it go to the peer.
    pub allowed_ip: Ipv4Addr,
    /// Where to send to the peer before it has sent anything (None: wait for it to initiate). The endpoint
    /// follows the source address of the peer's authenticated datagrams, as WireGuard does.
    pub endpoint: Option<SocketAddr>,
    /// Send a keep-alive when nothing was sent to the peer for this long (the agent uses 25 s).
    pub persistent_keepalive: Option<Duration>,
}

impl PeerConfig {
    /// A peer with no known endpoint and no keep-alive.
    pub fn new(public_key: PublicKey, allowed_ip: Ipv4Addr) -> Self {
        PeerConfig {
            public_key,
            allowed_ip,
            endpoint: None,
            persistent_keepalive: None,
        }
    }

    /// Sets where to reach the peer.
    pub fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Sets the persistent keep-alive interval.
    pub fn with_keepalive(mut self, interval: Duration) -> Self {
        self.persistent_keepalive = Some(interval);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), TunnelError> {
        if let Some(k) = self.persistent_keepalive {
            if k < TIMER_TICK || k > Duration::from_secs(u64::from(u16::MAX)) {
                return Err(TunnelError::Config(format!(
                    "persistent keep-alive {k:?} is outside {TIMER_TICK:?}..=65535 s"
                )));
            }
        }
        check_host_address(self.allowed_ip, "a peer's")
    }
}
