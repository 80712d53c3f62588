//! The instance registry: which instances exist, their apps, keys, tunnel addresses and ports.
//!
//! [`Registry`] holds every record in memory for lookups and writes each change through a [`RegistryStore`]
//! (SQLite by default, [`SqliteStore`]) before it changes memory, so what the gateway answers is always on disk.
//! Addresses come from an [`AddressAllocator`] and stay with an instance for its whole life; an instance not seen
//! for the configured time is expired and its address freed ([`Registry::expire`]).

mod allocator;
mod app_policies;
mod directory;
mod record;
mod sqlite;
mod store;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use protocol::control::{AppId, ErrorBody, ErrorCode, InstanceId, PublicKey, RegisterRequest};

pub use allocator::AddressAllocator;
#[cfg(test)]
pub(crate) use app_policies::fixtures as policy_fixtures;
pub use app_policies::{PolicyOffer, PolicyOfferError, StoredPolicy};
pub use directory::{HandshakeAges, RegistryDirectory, RegistryDrains, Snapshot, SnapshotCell};
pub use record::{Admission, InstanceRecord, Revocation, RevocationCounts};
pub use sqlite::{SqliteStore, SCHEMA_VERSION};
pub use store::{MemoryStore, RegistryStore, StoreError};

use crate::config::TunnelNetwork;

/// The most instances one app may have registered at once, unless `registry.max_instances_per_app` says
/// otherwise.
pub const DEFAULT_MAX_INSTANCES_PER_APP: usize = 64;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Another instance holds the WireGuard key.
    #[error("WireGuard key {key} is already registered by instance {holder}; generate a fresh key pair per instance")]
    KeyInUse {
        /// The key.
        key: PublicKey,
        /// The instance holding it.
        holder: InstanceId,
    },
    /// The instance id belongs to another app.
    #[error(
        "instance {instance} is registered for app {bound}, not {claimed}; an instance cannot change apps (use a new \
         instance id, or wait for the old registration to expire)"
    )]
    InstanceBoundToOtherApp {
        /// The instance.
        instance: InstanceId,
        /// The app it is bound to.
        bound: AppId,
        /// The app the request claimed.
        claimed: AppId,
    },
    /// No address is left.
    #[error("no free tunnel address left in {network}; enlarge tunnel.network or wait for expiry")]
    PoolExhausted {
        /// The tunnel network.
        network: TunnelNetwork,
    },
    /// The app already has its quota of instances, and the request is for a new one.
    #[error(
        "app {app} already has {max} registered instances, the most the gateway admits per app \
         (registry.max_instances_per_app); remove or let expire an instance first"
    )]
    QuotaExceeded {
        /// The app.
        app: AppId,
        /// The quota.
        max: usize,
    },
    /// The store failed; nothing changed.
    #[error("registry storage failed: {0}")]
    Store(#[from] StoreError),
}

impl RegisterError {
    /// The typed error body the control listener answers with.
    pub fn to_body(&self) -> ErrorBody {
        let code = match self {
            Self::KeyInUse { .. } => ErrorCode::KeyInUse,
            Self::InstanceBoundToOtherApp { .. } => ErrorCode::InstanceBoundToOtherApp,
            Self::PoolExhausted { .. } => ErrorCode::AddressPoolExhausted,
            Self::QuotaExceeded { .. } => ErrorCode::InstanceQuotaExceeded,
            Self::Store(_) => ErrorCode::Internal,
        };
        let message = match self {
            Self::Store(_) => {
                "the gateway could not store the registration; retry later".to_string()
            }
            other => other.to_string(),
        };
        ErrorBody::new(code, message)
    }
}

/// What a successful registration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new instance, with a new address.
    New,
    /// A known instance registered with a different WireGuard key; the old key's peer must go.
    KeyChanged {
        /// The key it had.
        old_key: PublicKey,
    },
    /// A known instance with the same key (ports or attestation may have changed).
    Refreshed,
}

/// A registration's result.
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    /// The stored record.
    pub record: InstanceRecord,
    /// What changed.
    pub change: Change,
}

/// The in-memory registry, written through to its store.
pub struct Registry {
    store: Box<dyn RegistryStore>,
    instances: HashMap<InstanceId, InstanceRecord>,
    by_key: HashMap<PublicKey, InstanceId>,
    allocator: AddressAllocator,
    network: TunnelNetwork,
    expire_after: Duration,
    published: SnapshotCell,
    revocations: Arc<RevocationCounts>,
    max_instances_per_app: usize,
    owner_policies: HashMap<String, Arc<attestation::owner::VerifiedPolicy>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("instances", &self.instances.len())
            .field("network", &self.network)
            .field("expire_after", &self.expire_after)
            .finish()
    }
}

impl Registry {
    /// Loads every stored instance. Records whose address no longer fits the tunnel network (or collides) get a
    /// fresh address, written back before this returns.
    pub fn open(
        mut store: Box<dyn RegistryStore>,
        network: TunnelNetwork,
        gateway: Ipv4Addr,
        expire_after: Duration,
    ) -> Result<Self, RegisterError> {
        let records = store.load_all()?;
        let owner_policies = app_policies::load(store.as_mut())?;
        let mut registry = Self {
            store,
            instances: HashMap::with_capacity(records.len()),
            by_key: HashMap::with_capacity(records.len()),
            allocator: AddressAllocator::new(network, gateway),
            network,
            expire_after,
            published: SnapshotCell::default(),
            revocations: Arc::default(),
            max_instances_per_app: DEFAULT_MAX_INSTANCES_PER_APP,
            owner_policies,
        };
        let mut misplaced = Vec::new();
        for record in records {
            if registry.allocator.reserve(record.tunnel_address) {
                registry.insert_memory(record);
            } else {
                misplaced.push(record);
            }
        }
        for mut record in misplaced {
            let old = record.tunnel_address;
            record.tunnel_address = registry
                .allocator
                .allocate()
                .ok_or(RegisterError::PoolExhausted { network })?;
            tracing::warn!(instance = %record.instance_id, %old, new = %record.tunnel_address,
                "stored tunnel address does not fit the tunnel network; reassigned");
            registry.store.upsert(&record)?;
            registry.insert_memory(record);
        }
        registry.publish();
        Ok(registry)
    }

    /// Sets the most instances one app may have registered at once (at least 1). Instances already stored beyond
    /// it stay; only new instances are refused until the app is below it again.
    pub fn set_max_instances_per_app(&mut self, max: usize) {
        self.max_instances_per_app = max.max(1);
    }

    /// The instances registered for `app`.
    fn instances_of(&self, app: &AppId) -> usize {
        self.instances.values().filter(|r| r.app_id == *app).count()
    }

    fn insert_memory(&mut self, record: InstanceRecord) {
        self.by_key
            .insert(record.public_key, record.instance_id.clone());
        self.instances.insert(record.instance_id.clone(), record);
    }

    /// Registers (or re-registers) an instance admitted with `admission` (its verified claims and their end).
    ///
    /// The request must already be validated and its attestation checked against the app's policy. On success the
    /// record is durable. On error nothing changed, in memory or on disk.
    pub fn register(
        &mut self,
        request: &RegisterRequest,
        admission: &Admission,
        now: u64,
    ) -> Result<RegisterOutcome, RegisterError> {
        if let Some(holder) = self.by_key.get(&request.wireguard_public_key) {
            if *holder != request.instance_id {
                return Err(RegisterError::KeyInUse {
                    key: request.wireguard_public_key,
                    holder: holder.clone(),
                });
            }
        }
        if let Some(existing) = self.instances.get(&request.instance_id) {
            if existing.app_id != request.app_id {
                return Err(RegisterError::InstanceBoundToOtherApp {
                    instance: request.instance_id.clone(),
                    bound: existing.app_id.clone(),
                    claimed: request.app_id.clone(),
                });
            }
            let change = if existing.public_key == request.wireguard_public_key {
                Change::Refreshed
            } else {
                Change::KeyChanged {
                    old_key: existing.public_key,
                }
            };
            let record = InstanceRecord {
                public_key: request.wireguard_public_key,
                ports: request.ports.clone(),
                attestation: admission.summary(),
                claims: Some(admission.claims.clone()),
                valid_until: admission.valid_until,
                last_seen: now,
                ..existing.clone()
            };
            self.store.upsert(&record)?;
            if let Change::KeyChanged { old_key } = &change {
                self.by_key.remove(old_key);
            }
            let republish = change != Change::Refreshed || existing.ports != record.ports;
            self.insert_memory(record.clone());
            if republish {
                self.publish();
            }
            return Ok(RegisterOutcome { record, change });
        }
        // Only a new instance counts against the quota: a known one re-registering (above) never does.
        if self.instances_of(&request.app_id) >= self.max_instances_per_app {
            return Err(RegisterError::QuotaExceeded {
                app: request.app_id.clone(),
                max: self.max_instances_per_app,
            });
        }
        let address = self
            .allocator
            .allocate()
            .ok_or(RegisterError::PoolExhausted {
                network: self.network,
            })?;
        let record = InstanceRecord {
            instance_id: request.instance_id.clone(),
            app_id: request.app_id.clone(),
            public_key: request.wireguard_public_key,
            tunnel_address: address,
            ports: request.ports.clone(),
            attestation: admission.summary(),
            claims: Some(admission.claims.clone()),
            valid_until: admission.valid_until,
            registered_at: now,
            last_seen: now,
        };
        if let Err(e) = self.store.upsert(&record) {
            self.allocator.release(address);
            return Err(e.into());
        }
        self.insert_memory(record.clone());
        self.publish();
        Ok(RegisterOutcome {
            record,
            change: Change::New,
        })
    }

    /// Records that an instance was seen (for example, its tunnel completed a handshake) without re-registering.
    pub fn touch(&mut self, instance_id: &InstanceId, now: u64) -> Result<(), StoreError> {
        if let Some(record) = self.instances.get_mut(instance_id) {
            if record.last_seen < now {
                self.store.touch(instance_id, now)?;
                record.last_seen = now;
            }
        }
        Ok(())
    }

    /// Removes every instance not seen within the expiry time and frees its address. Returns what was removed.
    pub fn expire(&mut self, now: u64) -> Result<Vec<InstanceRecord>, StoreError> {
        let cutoff = now.saturating_sub(self.expire_after.as_secs());
        let removed = self.remove_where(|r| (r.last_seen < cutoff).then_some(()))?;
        Ok(removed.into_iter().map(|(record, ())| record).collect())
    }

    /// Removes, durably, every instance for which `why` gives a reason, frees their addresses, and returns them with
    /// their reasons. Nothing changes when the store fails.
    pub fn remove_where<R>(
        &mut self,
        mut why: impl FnMut(&InstanceRecord) -> Option<R>,
    ) -> Result<Vec<(InstanceRecord, R)>, StoreError> {
        let doomed: Vec<(InstanceId, R)> = self
            .instances
            .values()
            .filter_map(|r| why(r).map(|reason| (r.instance_id.clone(), reason)))
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<InstanceId> = doomed.iter().map(|(id, _)| id.clone()).collect();
        self.store.remove(&ids)?;
        let mut removed = Vec::with_capacity(doomed.len());
        for (id, reason) in doomed {
            if let Some(record) = self.instances.remove(&id) {
                self.by_key.remove(&record.public_key);
                self.allocator.release(record.tunnel_address);
                removed.push((record, reason));
            }
        }
        self.publish();
        Ok(removed)
    }

    /// Records durably whether an instance is drained (takes no new client connections). Returns false, changing
    /// nothing, when no such instance is registered.
    pub fn set_drained(
        &mut self,
        instance_id: &InstanceId,
        drained: bool,
    ) -> Result<bool, StoreError> {
        if !self.instances.contains_key(instance_id) {
            return Ok(false);
        }
        self.store.set_drained(instance_id, drained)?;
        Ok(true)
    }

    /// The registered instances stored as drained.
    pub fn drained(&mut self) -> Result<Vec<InstanceId>, StoreError> {
        let mut ids = self.store.drained()?;
        ids.retain(|id| self.instances.contains_key(id));
        Ok(ids)
    }

    fn publish(&self) {
        let snapshot = Arc::new(Snapshot::build(self.instances.values()));
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// The counts of instances removed before their expiry (kept by the control service, shown by the directory).
    pub fn revocations(&self) -> Arc<RevocationCounts> {
        self.revocations.clone()
    }

    /// The cell this registry publishes lookup snapshots into (for [`RegistryDirectory`]).
    pub fn snapshots(&self) -> SnapshotCell {
        self.published.clone()
    }

    /// One instance.
    pub fn get(&self, instance_id: &InstanceId) -> Option<&InstanceRecord> {
        self.instances.get(instance_id)
    }

    /// The instance holding a WireGuard key.
    pub fn by_key(&self, key: &PublicKey) -> Option<&InstanceRecord> {
        self.by_key.get(key).and_then(|id| self.instances.get(id))
    }

    /// Every instance, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &InstanceRecord> {
        self.instances.values()
    }

    /// How many instances are registered.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The tunnel network.
    pub fn network(&self) -> TunnelNetwork {
        self.network
    }
}

#[cfg(test)]
mod tests;
