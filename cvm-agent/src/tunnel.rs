//! The agent's tunnel to the gateway: the WireGuard endpoint with the gateway as its one peer.
//!
//! This is the I/O side only; when to build, update or restart it is decided by [`crate::supervisor`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use protocol::control::RegisterResponse;
use protocol::tunnel::{
    Endpoint, EndpointConfig, InboundFilter, PeerConfig, PrivateKey, PublicKey, TunnelError,
};

use crate::config::AgentConfig;
use crate::supervisor::PeerActivity;

/// Why the tunnel could not be built or updated.
#[derive(Debug, thiserror::Error)]
pub enum TunnelSetupError {
    /// The endpoint (TUN device, UDP socket) could not be started.
    #[error("starting the tunnel endpoint: {0}")]
    Endpoint(#[source] TunnelError),
    /// The gateway's WireGuard endpoint did not resolve to an IPv4 address.
    #[error("cannot resolve the gateway endpoint {0}")]
    Resolve(String),
    /// The gateway could not be added as the peer.
    #[error("configuring the gateway peer: {0}")]
    Peer(#[source] TunnelError),
}

async fn resolve(endpoint: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(endpoint)
        .await
        .ok()?
        .find(|a| a.is_ipv4())
}

/// The running tunnel and the answer it was built from.
pub struct GatewayTunnel {
    endpoint: Endpoint,
    answer: RegisterResponse,
    gateway_key: PublicKey,
}

impl GatewayTunnel {
    /// Starts the endpoint on the assigned address, with only the declared ports (and ping) let in, and adds the
    /// gateway as its peer.
    pub async fn start(
        config: &AgentConfig,
        key: &PrivateKey,
        answer: RegisterResponse,
    ) -> Result<Self, TunnelSetupError> {
        let mut c = EndpointConfig::new(
            key.clone(),
            config.tunnel.listen_port,
            answer.tunnel_address,
            answer.tunnel_prefix_len,
        );
        c.tun_name = config.tunnel.interface.as_str().to_owned();
        c.mtu = config.tunnel.mtu.get();
        // Only the declared ports (and ping) get in; SYNs to any other port are refused with a reset.
        c.inbound_filter = Some(InboundFilter::new(
            config.ports.iter().map(|p| p.port),
            true,
        ));
        let endpoint = Endpoint::start(c)
            .await
            .map_err(TunnelSetupError::Endpoint)?;
        let gateway_key = answer.gateway.public_key;
        let tunnel = Self {
            endpoint,
            gateway_key,
            answer,
        };
        tunnel.add_gateway_peer().await?;
        tracing::info!(interface = %tunnel.endpoint.tun_name(), address = %tunnel.answer.tunnel_address,
            prefix = tunnel.answer.tunnel_prefix_len, gateway = %tunnel.answer.gateway.tunnel_address,
            endpoint = %tunnel.answer.gateway.endpoint, keepalive_secs = tunnel.answer.keepalive_secs,
            "tunnel up");
        Ok(tunnel)
    }

    /// The answer the tunnel follows.
    pub fn answer(&self) -> &RegisterResponse {
        &self.answer
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn add_gateway_peer(&self) -> Result<(), TunnelSetupError> {
        let endpoint = resolve(&self.answer.gateway.endpoint)
            .await
            .ok_or_else(|| TunnelSetupError::Resolve(self.answer.gateway.endpoint.clone()))?;
        let peer = PeerConfig::new(self.gateway_key, self.answer.gateway.tunnel_address)
            .with_endpoint(endpoint)
            .with_keepalive(Duration::from_secs(self.answer.keepalive_secs.max(1)));
        if self.endpoint.peer(&self.gateway_key).is_some() {
            self.endpoint.update_peer(peer)
        } else {
            self.endpoint.add_peer(peer)
        }
        .map_err(TunnelSetupError::Peer)
    }

    /// What the gateway peer did lately, for [`crate::supervisor::Event::PeerSeen`].
    pub fn activity(&self) -> PeerActivity {
        let Some(p) = self.endpoint.peer(&self.gateway_key) else {
            return PeerActivity::default();
        };
        PeerActivity {
            last_handshake: p.last_handshake,
            last_authenticated: p.last_authenticated,
            heard_ago: p.last_authenticated.map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or(Duration::ZERO)
            }),
        }
    }

    /// Starts a fresh WireGuard session with the gateway (its side may have lost the old one, e.g. in a restart):
    /// the peer is removed and added again, and the next keep-alive begins a handshake.
    pub async fn restart_session(&mut self) -> Result<(), TunnelSetupError> {
        let _ = self.endpoint.remove_peer(&self.gateway_key);
        self.add_gateway_peer().await
    }

    /// Applies a new answer with the same address: the gateway peer is updated in place (replaced if the
    /// gateway's key changed). On failure the tunnel is gone.
    pub async fn update(mut self, answer: RegisterResponse) -> Result<Self, TunnelSetupError> {
        let new_key = answer.gateway.public_key;
        if new_key != self.gateway_key {
            tracing::info!("the gateway's WireGuard key changed; replacing the peer");
            let _ = self.endpoint.remove_peer(&self.gateway_key);
            self.gateway_key = new_key;
        }
        self.answer = answer;
        self.add_gateway_peer().await?;
        Ok(self)
    }

    /// Stops the endpoint and waits for its threads.
    pub async fn shutdown(self) {
        self.endpoint.shutdown().await;
    }
}
