//! Connection accounting: the per-app connection limit, live counts per app and per instance, and the set of
//! drained instances (which receive no new connections).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    per_app: BTreeMap<String, usize>,
    per_instance: BTreeMap<String, usize>,
}

/// Live connection counts and the per-app limit.
#[derive(Debug)]
pub struct ConnectionTable {
    max_per_app: usize,
    counts: Mutex<Counts>,
}

/// A held connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    table: Arc<ConnectionTable>,
    app: String,
    instance: Option<String>,
}

impl ConnectionTable {
    /// A table allowing `max_per_app` concurrent connections per app.
    pub fn new(max_per_app: usize) -> Arc<Self> {
        Arc::new(ConnectionTable {
            max_per_app,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for `app`, or `None` when the app is at its limit.
    pub fn acquire(self: &Arc<Self>, app: &str) -> Option<ConnectionPermit> {
        let mut counts = self.lock();
        let n = counts.per_app.entry(app.to_owned()).or_insert(0);
        if *n >= self.max_per_app {
            return None;
        }
        *n += 1;
        Some(ConnectionPermit {
            table: self.clone(),
            app: app.to_owned(),
            instance: None,
        })
    }

    /// Live connections per app.
    pub fn per_app(&self) -> BTreeMap<String, usize> {
        live(&self.lock().per_app)
    }

    /// Live connections per instance.
    pub fn per_instance(&self) -> BTreeMap<String, usize> {
        live(&self.lock().per_instance)
    }

    /// The per-app limit.
    pub fn max_per_app(&self) -> usize {
        self.max_per_app
    }
}

impl ConnectionPermit {
    /// Records which instance the connection went to.
    pub fn set_instance(&mut self, instance_id: &str) {
        let mut counts = self.table.lock();
        if let Some(old) = self.instance.take() {
            decrement(&mut counts.per_instance, &old);
        }
        *counts
            .per_instance
            .entry(instance_id.to_owned())
            .or_insert(0) += 1;
        self.instance = Some(instance_id.to_owned());
    }
}

/// The entries of `counts` with at least one connection.
fn live(counts: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn decrement(map: &mut BTreeMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        decrement(&mut counts.per_app, &self.app);
        if let Some(i) = &self.instance {
            decrement(&mut counts.per_instance, i);
        }
    }
}

/// Durable storage of the drain state, so it survives a restart of the gateway.
pub trait DrainStore: Send + Sync {
    /// The instances stored as drained.
    fn load(&self) -> Result<Vec<String>, DrainStoreError>;
    /// Stores whether an instance is drained; must be durable when it returns.
    fn save(&self, instance_id: &str, drained: bool) -> Result<(), DrainStoreError>;
}

/// Why the drain state could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum DrainStoreError {
    /// Loading the drained instances failed.
    #[error("loading the drained instances: {0}")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Storing one instance's drain state failed.
    #[error("storing the drain state of instance {instance}: {source}")]
    Save {
        /// The instance.
        instance: String,
        /// The storage error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Instances that take no new connections. With a [`DrainStore`] attached, every change is stored before it
/// takes effect.
#[derive(Default)]
pub struct DrainSet {
    drained: Mutex<BTreeSet<String>>,
    store: std::sync::OnceLock<Box<dyn DrainStore>>,
    // Serialises changes, so the stored state and the set change in the same order; lookups never wait for it.
    writer: Mutex<()>,
}

impl std::fmt::Debug for DrainSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainSet")
            .field("drained", &*self.lock())
            .field("stored", &self.store.get().is_some())
            .finish()
    }
}

impl DrainSet {
    /// Attaches durable storage and adds the instances it holds as drained; returns how many it held. A set
    /// takes one store; attaching another is refused.
    pub fn attach_store(&self, store: Box<dyn DrainStore>) -> Result<usize, DrainStoreError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.store.get().is_some() {
            return Err(DrainStoreError::Load(
                "a drain store is already attached".into(),
            ));
        }
        let stored = store.load()?;
        let n = stored.len();
        self.lock().extend(stored);
        let _ = self.store.set(store);
        Ok(n)
    }

    /// Drains an instance; returns false if it was already drained.
    pub fn drain(&self, instance_id: &str) -> Result<bool, DrainStoreError> {
        self.change(instance_id, true)
    }

    /// Undrains an instance; returns false if it was not drained.
    pub fn undrain(&self, instance_id: &str) -> Result<bool, DrainStoreError> {
        self.change(instance_id, false)
    }

    fn change(&self, instance_id: &str, drained: bool) -> Result<bool, DrainStoreError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_drained(instance_id) == drained {
            return Ok(false);
        }
        if let Some(store) = self.store.get() {
            store.save(instance_id, drained)?;
        }
        let mut set = self.lock();
        if drained {
            set.insert(instance_id.to_owned());
        } else {
            set.remove(instance_id);
        }
        Ok(true)
    }

    /// Whether an instance is drained.
    pub fn is_drained(&self, instance_id: &str) -> bool {
        self.lock().contains(instance_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.drained.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_app_limit_and_counts_follow_permits() {
        let t = ConnectionTable::new(2);
        let mut a = t.acquire("app1").unwrap();
        a.set_instance("i1");
        let b = t.acquire("app1").unwrap();
        assert!(t.acquire("app1").is_none());
        let other = t.acquire("app2").unwrap();
        assert_eq!(t.per_app().get("app1"), Some(&2));
        assert_eq!(t.per_instance().get("i1"), Some(&1));
        drop(a);
        assert_eq!(t.per_instance().get("i1"), None);
        assert!(t.acquire("app1").is_some());
        drop((b, other));
        assert!(t.per_app().is_empty());
    }

    #[test]
    fn drain_and_undrain() {
        let d = DrainSet::default();
        assert!(d.drain("i1").unwrap());
        assert!(!d.drain("i1").unwrap());
        assert!(d.is_drained("i1"));
        assert!(d.undrain("i1").unwrap());
        assert!(!d.is_drained("i1"));
    }

    /// A store in memory that can be told to fail.
    #[derive(Default)]
    struct Stored {
        ids: Mutex<BTreeSet<String>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl DrainStore for Arc<Stored> {
        fn load(&self) -> Result<Vec<String>, DrainStoreError> {
            Ok(self.ids.lock().unwrap().iter().cloned().collect())
        }
        fn save(&self, instance_id: &str, drained: bool) -> Result<(), DrainStoreError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(DrainStoreError::Save {
                    instance: instance_id.to_owned(),
                    source: "disk full".into(),
                });
            }
            let mut ids = self.ids.lock().unwrap();
            if drained {
                ids.insert(instance_id.to_owned());
            } else {
                ids.remove(instance_id);
            }
            Ok(())
        }
    }

    #[test]
    fn drain_state_is_stored_restored_and_unchanged_when_storing_fails() {
        let store = Arc::new(Stored::default());
        let d = DrainSet::default();
        assert_eq!(d.attach_store(Box::new(store.clone())).unwrap(), 0);
        assert!(d.attach_store(Box::new(store.clone())).is_err());
        assert!(d.drain("i1").unwrap());
        assert!(d.drain("i2").unwrap());
        assert!(d.undrain("i2").unwrap());
        assert_eq!(store.load().unwrap(), vec!["i1".to_owned()]);

        // A fresh set (a restarted gateway) picks the state up from the store.
        let again = DrainSet::default();
        assert_eq!(again.attach_store(Box::new(store.clone())).unwrap(), 1);
        assert!(again.is_drained("i1") && !again.is_drained("i2"));

        // A failed write changes nothing.
        store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = again.drain("i3").unwrap_err();
        assert!(err.to_string().contains("instance i3: disk full"), "{err}");
        assert!(!again.is_drained("i3"));
        assert!(again.undrain("i1").is_err());
        assert!(again.is_drained("i1"));
    }
}
