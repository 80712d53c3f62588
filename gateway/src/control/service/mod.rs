//! Registration as plain functions: decode, authorise, store, update the tunnel, answer.
//!
//! Nothing here knows about HTTP or TLS, so every refusal can be tested directly. The registry lock is held from
//! the registry write through the tunnel update, so concurrent registrations of one instance apply in order.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use protocol::control::{
    decode_register_request, ErrorBody, ErrorCode, GatewayTunnel, RegisterResponse, WireGuardKey,
    PROTOCOL_VERSION,
};

use super::peer::PeerAttestation;
use super::tunnel::PeerTable;
use crate::registry::{Change, InstanceRecord, Registry};

/// What every successful registration answer carries besides the instance's own address.
#[derive(Debug, Clone)]
pub struct ResponseSettings {
    /// The gateway's WireGuard public key.
    pub gateway_key: WireGuardKey,
    /// The gateway's WireGuard endpoint, `host:port`.
    pub gateway_endpoint: String,
    /// The gateway's tunnel address.
    pub gateway_address: Ipv4Addr,
    /// Prefix length of the tunnel network.
    pub prefix_len: u8,
    /// Keep-alive interval agents use, in seconds.
    pub keepalive_secs: u64,
    /// Re-registration interval, in seconds.
    pub reregister_secs: u64,
    /// Base domains of the gateway.
    pub base_domains: Vec<String>,
}

/// The registration service: the registry, the tunnel's peer table and the answer settings.
#[derive(Clone)]
pub struct ControlService {
    registry: Arc<Mutex<Registry>>,
    peers: Arc<dyn PeerTable>,
    settings: Arc<ResponseSettings>,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn internal(context: &str, e: impl std::fmt::Display) -> ErrorBody {
    tracing::error!(error = %e, "{context}");
    ErrorBody::new(ErrorCode::Internal, format!("{context}; retry later"))
}

impl ControlService {
    /// A service over a registry and a peer table.
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        peers: Arc<dyn PeerTable>,
        settings: ResponseSettings,
    ) -> Self {
        Self {
            registry,
            peers,
            settings: Arc::new(settings),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Mutex<Registry>> {
        &self.registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one `POST /v1/register` body from a peer whose attestation was verified (or `None` if it presented
    /// none). Blocking: it writes to the database; call it from a blocking context.
    pub fn register(
        &self,
        body: &[u8],
        peer: Option<&dyn PeerAttestation>,
        now: u64,
    ) -> Result<RegisterResponse, ErrorBody> {
        let request = decode_register_request(body)?;
        let Some(peer) = peer else {
            return Err(ErrorBody::new(
                ErrorCode::AttestationRequired,
                "registration needs a client RA-TLS certificate carrying the instance's evidence",
            ));
        };
        if peer.is_app_id(request.instance_id.as_str()) {
            return Err(ErrorBody::new(
                ErrorCode::InstanceIdIsAppId,
                format!(
                    "instance id {} is also an app id, which makes host names ambiguous; choose another instance id",
                    request.instance_id
                ),
            ));
        }
        let summary = peer.authorize(&request.app_id)?;
        let mut registry = self.lock();
        let outcome = registry.register(&request, &summary, now).map_err(|e| {
            let body = e.to_body();
            if body.error == ErrorCode::Internal {
                tracing::error!(error = %e, instance = %request.instance_id, "registration not stored");
            }
            body
        })?;
        if let Change::KeyChanged { old_key } = &outcome.change {
            self.peers.remove_peer(old_key);
        }
        self.peers
            .upsert_peer(&outcome.record.public_key, outcome.record.tunnel_address)
            .map_err(|e| internal("the gateway could not add the WireGuard peer", e))?;
        drop(registry);
        let r = &outcome.record;
        match outcome.change {
            Change::New => {
                tracing::info!(instance = %r.instance_id, app = %r.app_id, address = %r.tunnel_address,
                attestation = %r.attestation, "instance registered")
            }
            Change::KeyChanged { .. } => {
                tracing::info!(instance = %r.instance_id, address = %r.tunnel_address,
                "instance re-registered with a new WireGuard key")
            }
            Change::Refreshed => {
                tracing::debug!(instance = %r.instance_id, "instance re-registered")
            }
        }
        Ok(self.answer(r))
    }

    fn answer(&self, record: &InstanceRecord) -> RegisterResponse {
        let s = &self.settings;
        RegisterResponse {
            version: PROTOCOL_VERSION,
            instance_id: record.instance_id.clone(),
            tunnel_address: record.tunnel_address,
            tunnel_prefix_len: s.prefix_len,
            gateway: GatewayTunnel {
                public_key: s.gateway_key,
                endpoint: s.gateway_endpoint.clone(),
                tunnel_address: s.gateway_address,
            },
            keepalive_secs: s.keepalive_secs,
            reregister_secs: s.reregister_secs,
            base_domains: s.base_domains.clone(),
        }
    }

    /// Puts every registered instance's peer into the tunnel (on start). Returns how many were restored.
    pub fn restore_peers(&self) -> usize {
        let registry = self.lock();
        let mut restored = 0;
        for record in registry.records() {
            match self
                .peers
                .upsert_peer(&record.public_key, record.tunnel_address)
            {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::error!(instance = %record.instance_id, error = %e, "cannot restore peer")
                }
            }
        }
        restored
    }

    /// Expires instances not seen within the expiry time and removes their peers. Returns how many went.
    pub fn expire(&self, now: u64) -> usize {
        let mut registry = self.lock();
        match registry.expire(now) {
            Ok(removed) => {
                for r in &removed {
                    self.peers.remove_peer(&r.public_key);
                    tracing::info!(instance = %r.instance_id, address = %r.tunnel_address, "instance expired");
                }
                removed.len()
            }
            Err(e) => {
                tracing::error!(error = %e, "expiry failed; will retry");
                0
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
