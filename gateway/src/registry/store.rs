//! The storage seam of the registry: a trait, and an in-memory implementation for tests.

use std::collections::{BTreeMap, BTreeSet};

use protocol::control::InstanceId;

use super::app_policies::StoredPolicy;
use super::record::InstanceRecord;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite database failed.
    #[error("registry database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer gateway.
    #[error(
        "registry database {path} has schema version {found}; this gateway knows up to {known}"
    )]
    SchemaTooNew {
        /// The database file.
        path: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A stored row cannot be decoded.
    #[error("registry database {path}: corrupt row for instance {instance}: {what}")]
    Corrupt {
        /// The database file.
        path: String,
        /// The instance the row belongs to.
        instance: String,
        /// What is wrong.
        what: String,
    },
    /// The directory holding the database cannot be created.
    #[error("cannot create directory for registry database {path}: {source}")]
    CreateDir {
        /// The database file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Durable storage of instance records. Every write must be durable when the method returns.
pub trait RegistryStore: Send {
    /// Every stored instance.
    fn load_all(&mut self) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Inserts or replaces an instance (with its ports).
    fn upsert(&mut self, record: &InstanceRecord) -> Result<(), StoreError>;
    /// Updates only the last-seen time of an instance.
    fn touch(&mut self, instance_id: &InstanceId, last_seen: u64) -> Result<(), StoreError>;
    /// Removes instances.
    fn remove(&mut self, instance_ids: &[InstanceId]) -> Result<(), StoreError>;
    /// The stored instances an operator drained.
    fn drained(&mut self) -> Result<Vec<InstanceId>, StoreError>;
    /// Records whether a stored instance is drained; an instance not stored is left alone.
    fn set_drained(&mut self, instance_id: &InstanceId, drained: bool) -> Result<(), StoreError>;
    /// A named secret of the gateway itself, if stored.
    fn secret(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a named secret durably.
    fn put_secret(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Every stored owner-signed app policy.
    fn app_policies(&mut self) -> Result<Vec<StoredPolicy>, StoreError>;
    /// Stores an app's policy durably, replacing the app's previous one.
    fn put_app_policy(&mut self, policy: &StoredPolicy) -> Result<(), StoreError>;
}

/// A store that keeps records in memory only (tests, and throwaway gateways).
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: BTreeMap<InstanceId, InstanceRecord>,
    drained: BTreeSet<InstanceId>,
    secrets: BTreeMap<String, Vec<u8>>,
    app_policies: BTreeMap<String, StoredPolicy>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RegistryStore for MemoryStore {
    fn load_all(&mut self) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(self.records.values().cloned().collect())
    }

    fn upsert(&mut self, record: &InstanceRecord) -> Result<(), StoreError> {
        self.records
            .insert(record.instance_id.clone(), record.clone());
        Ok(())
    }

    fn touch(&mut self, instance_id: &InstanceId, last_seen: u64) -> Result<(), StoreError> {
        if let Some(r) = self.records.get_mut(instance_id) {
            r.last_seen = last_seen;
        }
        Ok(())
    }

    fn remove(&mut self, instance_ids: &[InstanceId]) -> Result<(), StoreError> {
        for id in instance_ids {
            self.records.remove(id);
            self.drained.remove(id);
        }
        Ok(())
    }

    fn drained(&mut self) -> Result<Vec<InstanceId>, StoreError> {
        Ok(self.drained.iter().cloned().collect())
    }

    fn set_drained(&mut self, instance_id: &InstanceId, drained: bool) -> Result<(), StoreError> {
        if drained && self.records.contains_key(instance_id) {
            self.drained.insert(instance_id.clone());
        } else {
            self.drained.remove(instance_id);
        }
        Ok(())
    }

    fn secret(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.secrets.get(name).cloned())
    }

    fn put_secret(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.secrets.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn app_policies(&mut self) -> Result<Vec<StoredPolicy>, StoreError> {
        Ok(self.app_policies.values().cloned().collect())
    }

    fn put_app_policy(&mut self, policy: &StoredPolicy) -> Result<(), StoreError> {
        self.app_policies
            .insert(policy.app_id.clone(), policy.clone());
        Ok(())
    }
}
