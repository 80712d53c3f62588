//! The registry as the proxy sees it: an [`InstanceDirectory`] over registered instances.
//!
//! Lookups read an immutable snapshot that the registry republishes after every change of membership, keys or
//! ports, so the proxy never waits for a registration's disk write. Handshake ages come live from the tunnel.
//! [`RegistryDrains`] keeps the proxy's drained instances in the registry.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use protocol::control::{InstanceId, PublicKey, TargetState};

use super::record::InstanceRecord;
use super::Registry;
use crate::proxy::directory::{
    Candidate, InstanceDirectory, InstanceView, LookupError, Resolution,
};
use crate::proxy::limits::{DrainStore, DrainStoreError};

/// How long ago each tunnel peer completed a handshake.
pub trait HandshakeAges: Send + Sync + 'static {
    /// Time since the peer's last handshake; `None` if it never completed one.
    fn since_handshake(&self, key: &PublicKey) -> Option<Duration>;
}

/// An immutable view of every instance, grouped for lookups.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_app: HashMap<String, Vec<Arc<InstanceRecord>>>,
    by_instance: HashMap<String, Arc<InstanceRecord>>,
}

impl Snapshot {
    /// Builds a snapshot from records.
    pub fn build<'a>(records: impl Iterator<Item = &'a InstanceRecord>) -> Self {
        let mut s = Self::default();
        for r in records {
            let r = Arc::new(r.clone());
            s.by_app
                .entry(r.app_id.as_str().to_owned())
                .or_default()
                .push(r.clone());
            s.by_instance.insert(r.instance_id.as_str().to_owned(), r);
        }
        for members in s.by_app.values_mut() {
            members.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        }
        s
    }
}

/// The shared cell the registry publishes snapshots into.
pub type SnapshotCell = Arc<RwLock<Arc<Snapshot>>>;

/// The registry's [`InstanceDirectory`].
pub struct RegistryDirectory {
    cell: SnapshotCell,
    ages: Arc<dyn HandshakeAges>,
    revocations: Option<Arc<super::RevocationCounts>>,
}

impl std::fmt::Debug for RegistryDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryDirectory").finish_non_exhaustive()
    }
}

impl RegistryDirectory {
    /// A directory over the registry's published snapshots and the tunnel's handshake ages.
    pub fn new(cell: SnapshotCell, ages: Arc<dyn HandshakeAges>) -> Self {
        Self {
            cell,
            ages,
            revocations: None,
        }
    }

    /// Also shows the registry's revocation counts in the metrics.
    pub fn with_revocations(mut self, counts: Arc<super::RevocationCounts>) -> Self {
        self.revocations = Some(counts);
        self
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.cell.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl InstanceDirectory for RegistryDirectory {
    /// Resolves an app id first, then an instance id. Ports whose target the agent reported as down are left out,
    /// since the agent would only reset the connection: a port that some instance declares but none has up
    /// resolves to no candidates (the proxy refuses "no healthy instance"), while a port no instance declares is
    /// [`LookupError::PortNotExposed`].
    fn resolve(&self, id: &str, port: u16) -> Result<Resolution, LookupError> {
        let snap = self.snapshot();
        let id = id.to_ascii_lowercase();
        let (app_id, members): (String, Vec<&Arc<InstanceRecord>>) =
            if let Some(m) = snap.by_app.get(&id) {
                (id.clone(), m.iter().collect())
            } else if let Some(one) = snap.by_instance.get(&id) {
                (one.app_id.as_str().to_owned(), vec![one])
            } else {
                return Err(LookupError::UnknownId(id));
            };
        let mut declared = false;
        let candidates: Vec<Candidate> = members
            .into_iter()
            .filter_map(|r| {
                let p = r.ports.iter().find(|p| p.port == port)?;
                declared = true;
                if p.target_state == Some(TargetState::Down) {
                    return None;
                }
                Some(Candidate {
                    instance_id: r.instance_id.as_str().to_owned(),
                    addr: SocketAddr::new(IpAddr::V4(r.tunnel_address), port),
                    proxy_protocol: p.proxy_protocol,
                    since_handshake: self.ages.since_handshake(&r.public_key),
                })
            })
            .collect();
        if !declared {
            return Err(LookupError::PortNotExposed { id, port });
        }
        Ok(Resolution { app_id, candidates })
    }

    fn instances(&self) -> Vec<InstanceView> {
        let snap = self.snapshot();
        let mut out: Vec<InstanceView> = snap
            .by_instance
            .values()
            .map(|r| InstanceView {
                instance_id: r.instance_id.as_str().to_owned(),
                app_id: r.app_id.as_str().to_owned(),
                address: IpAddr::V4(r.tunnel_address),
                ports: r
                    .ports
                    .iter()
                    .map(|p| (p.port, p.proxy_protocol))
                    .collect::<BTreeMap<_, _>>(),
                since_handshake_secs: self
                    .ages
                    .since_handshake(&r.public_key)
                    .map(|d| d.as_secs()),
            })
            .collect();
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        out
    }

    fn render_metrics(&self, out: &mut String) {
        if let Some(counts) = &self.revocations {
            counts.render(out);
        }
    }
}

/// The registry as the proxy's [`DrainStore`]: an operator's drain of an instance is stored with the instance, so
/// it survives a gateway restart and goes away when the instance expires.
#[derive(Clone)]
pub struct RegistryDrains {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for RegistryDrains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryDrains").finish_non_exhaustive()
    }
}

impl RegistryDrains {
    /// Drain storage in `registry`.
    pub fn new(registry: Arc<Mutex<Registry>>) -> Self {
        Self { registry }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DrainStore for RegistryDrains {
    fn load(&self) -> Result<Vec<String>, DrainStoreError> {
        let ids = self
            .lock()
            .drained()
            .map_err(|e| DrainStoreError::Load(Box::new(e)))?;
        Ok(ids.into_iter().map(|id| id.as_str().to_owned()).collect())
    }

    fn save(&self, instance_id: &str, drained: bool) -> Result<(), DrainStoreError> {
        let save_err = |source: Box<dyn std::error::Error + Send + Sync>| DrainStoreError::Save {
            instance: instance_id.to_owned(),
            source,
        };
        let id: InstanceId = instance_id
            .parse()
            .map_err(|e: protocol::control::IdError| save_err(Box::new(e)))?;
        let found = self
            .lock()
            .set_drained(&id, drained)
            .map_err(|e| save_err(Box::new(e)))?;
        // Undraining an instance that has gone (expired) needs nothing stored.
        if drained && !found {
            return Err(save_err("the instance is not registered".into()));
        }
        Ok(())
    }
}
