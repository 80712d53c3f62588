//! Registration as plain functions: decode, authorise, store, update the tunnel, answer.
//!
//! Nothing here knows about HTTP or TLS, so every refusal can be tested directly. The registry lock is held from
//! the registry write through the tunnel update, so concurrent registrations of one instance apply in order.
//!
//! Revocation: an instance stays in rotation only while what admitted it still holds. [`ControlService::revoke`]
//! removes, from the registry and the tunnel at once, every instance the current policy no longer admits or whose
//! evidence ended without renewal (the gateway calls it when the policy file changes and on every expiry sweep),
//! and a registration the policy refuses removes the instance it names when it comes with that instance's own
//! WireGuard key (so another app's CVM cannot evict an instance by naming it). [`ControlService::revocations`]
//! counts removals by reason.
//!
//! Owner policies: an instance is admitted only under the policy its app's owner signed
//! ([`attestation::owner`]), the highest version the registry has seen. A registration may carry that policy
//! (the agent's configured file), and the owner may upload it through the admin API; both go through
//! [`ControlService::offer_policy`], which installs a higher version and at once removes the app's instances the
//! new version no longer admits. A lower or equal version changes nothing.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use attestation::owner::{SignedPolicy, VerifiedPolicy};

use protocol::control::{
    decode_register_request, ErrorBody, ErrorCode, GatewayTunnel, PublicKey, RegisterResponse,
    PROTOCOL_VERSION,
};

use super::peer::PeerAttestation;
use super::tunnel::PeerTable;
use crate::registry::{
    Change, InstanceRecord, PolicyOffer, PolicyOfferError, Registry, Revocation, RevocationCounts,
};

/// What every successful registration answer carries besides the instance's own address.
#[derive(Debug, Clone)]
pub struct ResponseSettings {
    /// The gateway's WireGuard public key.
    pub gateway_key: PublicKey,
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
    revocations: Arc<RevocationCounts>,
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
        let revocations = registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revocations();
        Self {
            registry,
            peers,
            settings: Arc::new(settings),
            revocations,
        }
    }

    /// Instances removed before their expiry so far, by reason.
    pub fn revocations(&self) -> &RevocationCounts {
        &self.revocations
    }

    /// The shared counts behind [`Self::revocations`], for the metrics.
    pub fn revocations_handle(&self) -> Arc<RevocationCounts> {
        self.revocations.clone()
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
        if let Some(document) = &request.app_policy {
            self.offer_policy(&request.app_id, document, now)
                .map_err(|e| {
                    tracing::warn!(app = %request.app_id, instance = %request.instance_id, reason = e.kind(),
                        "app policy carried by a registration refused: {e}");
                    ErrorBody::new(
                        ErrorCode::PolicyRefused,
                        format!("the app policy carried for app {} is refused: {e}", request.app_id),
                    )
                })?;
        }
        let instance_is_app = peer.is_app_id(request.instance_id.as_str())
            || self
                .lock()
                .owner_policy(request.instance_id.as_str())
                .is_some();
        if instance_is_app {
            return Err(ErrorBody::new(
                ErrorCode::InstanceIdIsAppId,
                format!(
                    "instance id {} is also an app id, which makes host names ambiguous; choose another instance id",
                    request.instance_id
                ),
            ));
        }
        let owner = self.lock().owner_policy(request.app_id.as_str());
        let admission = match peer.authorize(&request.app_id, owner.as_deref()) {
            Ok(admission) => admission,
            Err(refusal) => {
                self.revoke_refused(&request, &refusal.message);
                return Err(refusal);
            }
        };
        let mut registry = self.lock();
        let outcome = registry.register(&request, &admission, now).map_err(|e| {
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

    /// A refused registration removes the instance it names, provided the stored instance has the request's app and
    /// WireGuard key: the refused CVM is the one in rotation, whose evidence no longer passes.
    fn revoke_refused(&self, request: &protocol::control::RegisterRequest, why: &str) {
        let mut registry = self.lock();
        let same = |r: &InstanceRecord| {
            r.instance_id == request.instance_id
                && r.app_id == request.app_id
                && r.public_key == request.wireguard_public_key
        };
        if !registry.get(&request.instance_id).is_some_and(same) {
            return;
        }
        let why = Revocation::RefusedRegistration(why.to_owned());
        match registry.remove_where(|r| same(r).then(|| why.clone())) {
            Ok(removed) => self.removed(removed),
            Err(e) => {
                tracing::error!(instance = %request.instance_id, error = %e, "refused instance not removed")
            }
        }
    }

    /// Verifies a signed policy `document` for `app_id` and offers it to the registry (see the module
    /// documentation). A version higher than the one in force is installed, and the app's instances it no longer
    /// admits are removed at once. Blocking: it writes to the database.
    pub fn offer_policy(
        &self,
        app_id: &protocol::control::AppId,
        document: &str,
        now: u64,
    ) -> Result<PolicyOffer, PolicyOfferError> {
        let signed = SignedPolicy::from_json(document)?;
        let mut registry = self.lock();
        let offer = registry.offer_policy(&signed, Some(app_id.as_str()), now)?;
        match &offer {
            PolicyOffer::Installed {
                version, previous, ..
            } => {
                tracing::info!(app = %app_id, version, previous, "app owner's policy installed");
                if let Some(policy) = registry.owner_policy(app_id.as_str()) {
                    let removed = registry.remove_where(|r| {
                        if r.app_id != *app_id {
                            return None;
                        }
                        admitted_by(&policy, r).err().map(Revocation::Policy)
                    });
                    match removed {
                        Ok(removed) => self.removed(removed),
                        Err(e) => {
                            tracing::error!(app = %app_id, error = %e, "re-check under the new policy failed; the next maintenance tick retries")
                        }
                    }
                }
            }
            PolicyOffer::Kept {
                offered, stored, ..
            } => {
                tracing::debug!(app = %app_id, offered, stored, "app policy offered is not newer; kept")
            }
        }
        Ok(offer)
    }

    /// Removes every instance that `admitted` no longer accepts (its error says why) or whose evidence ended before
    /// `now`, from the registry and the tunnel. Returns how many went. Blocking: it writes to the database.
    pub fn revoke(
        &self,
        now: u64,
        admitted: impl Fn(&InstanceRecord) -> Result<(), String>,
    ) -> usize {
        self.revoke_under(now, |r, _| admitted(r))
    }

    /// [`Self::revoke`], where `admitted` is also given the owner policy in force for the record's app.
    pub fn revoke_under(
        &self,
        now: u64,
        admitted: impl Fn(&InstanceRecord, Option<&VerifiedPolicy>) -> Result<(), String>,
    ) -> usize {
        let mut registry = self.lock();
        let owners = registry.owner_policies();
        let removed = registry.remove_where(|r| {
            if r.valid_until < now {
                return Some(Revocation::EvidenceExpired {
                    valid_until: r.valid_until,
                });
            }
            admitted(r, owners.get(r.app_id.as_str()).map(|p| p.as_ref()))
                .err()
                .map(Revocation::Policy)
        });
        match removed {
            Ok(removed) => {
                let n = removed.len();
                self.removed(removed);
                n
            }
            Err(e) => {
                tracing::error!(error = %e, "revocation failed; will retry");
                0
            }
        }
    }

    /// Takes removed instances out of the tunnel, logs and counts them. Called with the registry lock held, so a
    /// concurrent registration cannot put a peer back in between.
    fn removed(&self, removed: Vec<(InstanceRecord, Revocation)>) {
        for (r, why) in removed {
            self.peers.remove_peer(&r.public_key);
            self.revocations.count(&why);
            tracing::warn!(instance = %r.instance_id, app = %r.app_id, address = %r.tunnel_address,
                reason = why.kind(), "instance removed: {why}");
        }
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

/// Whether the owner's `policy` admits a registered instance: `Err` names why not.
pub fn admitted_by(policy: &VerifiedPolicy, record: &InstanceRecord) -> Result<(), String> {
    let Some(claims) = &record.claims else {
        return Err("no verified claims are stored for it".into());
    };
    policy.check(claims).map(|_| ()).map_err(|v| v.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
