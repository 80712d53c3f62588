//! The read side of discovery: the containers last seen and the engine's state, shared between the task that
//! follows the engine and the forwarder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::{Container, EngineState};
use crate::target::Target;

#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) containers: BTreeMap<String, Container>,
    pub(super) engine: EngineState,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) snapshot: RwLock<Snapshot>,
    /// Bumped after every change, so waiters can follow updates.
    pub(super) generation: watch::Sender<u64>,
}

impl Shared {
    /// A view holding `containers`, the engine in `engine` state.
    pub(super) fn new(containers: Vec<Container>, engine: EngineState) -> Arc<Self> {
        Arc::new(Shared {
            snapshot: RwLock::new(Snapshot {
                containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
                engine,
            }),
            generation: watch::channel(0).0,
        })
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        match self.snapshot.write() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
        self.generation.send_modify(|g| *g += 1);
    }

    pub(super) fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        match self.snapshot.read() {
            Ok(s) => f(&s),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }
}

/// The read side of discovery: which containers run, and whether the engine answers.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub(super) shared: Arc<Shared>,
}

impl Discovery {
    /// Addresses of the running containers serving `target` on `tunnel_port`, ordered by container id (empty for
    /// a fixed-address target).
    pub fn candidates(&self, target: &Target, tunnel_port: u16) -> Vec<SocketAddr> {
        self.shared.read(|s| {
            s.containers
                .values()
                .filter_map(|c| {
                    let port = c.serves(target, tunnel_port)?;
                    Some(SocketAddr::new(*c.addresses.first()?, port))
                })
                .collect()
        })
    }

    /// The running containers as last seen.
    pub fn containers(&self) -> Vec<Container> {
        self.shared
            .read(|s| s.containers.values().cloned().collect())
    }

    /// Whether the engine currently answers.
    pub fn engine_state(&self) -> EngineState {
        self.shared.read(|s| s.engine.clone())
    }

    /// A receiver that changes after every update of the container view or engine state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }
}

#[cfg(test)]
impl Discovery {
    /// A view holding `containers`, with no task behind it (for the forwarder's tests).
    pub(crate) fn fixed(containers: Vec<Container>) -> Discovery {
        Discovery {
            shared: Shared::new(containers, EngineState::Reachable),
        }
    }

    /// Drops a container from the view, as when it stops.
    pub(crate) fn remove(&self, id: &str) {
        self.shared.update(|s| {
            s.containers.remove(id);
        });
    }
}
