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
        self.lock()
            .per_app
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Live connections per instance.
    pub fn per_instance(&self) -> BTreeMap<String, usize> {
        self.lock()
            .per_instance
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
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

/// Instances that take no new connections.
#[derive(Debug, Default)]
pub struct DrainSet {
    drained: Mutex<BTreeSet<String>>,
}

impl DrainSet {
    /// Drains an instance; returns false if it was already drained.
    pub fn drain(&self, instance_id: &str) -> bool {
        self.lock().insert(instance_id.to_owned())
    }

    /// Undrains an instance; returns false if it was not drained.
    pub fn undrain(&self, instance_id: &str) -> bool {
        self.lock().remove(instance_id)
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
        assert!(d.drain("i1"));
        assert!(!d.drain("i1"));
        assert!(d.is_drained("i1"));
        assert!(d.undrain("i1"));
        assert!(!d.is_drained("i1"));
    }
}
