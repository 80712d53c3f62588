//! One declared port's shared state: its rule, its round-robin position and, for a fixed-address target, its
//! health as the probes and forwarded connections found it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::sync::watch;

use super::PortRule;

/// One port's rule, its round-robin position and, for a fixed address, its health.
#[derive(Debug)]
pub(super) struct Port {
    pub(super) rule: PortRule,
    pub(super) next: AtomicUsize,
    /// Fixed-address targets only: whether the target accepts connections (`None` until the first probe).
    pub(super) health: Option<watch::Sender<Option<bool>>>,
    /// Bumped on every state change of any port of the forwarder.
    pub(super) changes: Arc<watch::Sender<u64>>,
}

impl Port {
    /// Records a fixed-address target's state; logs and signals only changes.
    pub(super) fn set_health(&self, up: bool, reason: &str) {
        let Some(health) = &self.health else { return };
        let mut was = None;
        let changed = health.send_if_modified(|state| {
            was = *state;
            let changed = *state != Some(up);
            *state = Some(up);
            changed
        });
        if !changed {
            return;
        }
        let (port, target) = (self.rule.port, &self.rule.target);
        match (was, up) {
            (_, false) => {
                tracing::warn!(port, %target, reason, "target not reachable: refusing connections")
            }
            (Some(false), true) => {
                tracing::info!(port, %target, "target reachable again: accepting connections")
            }
            (_, true) => tracing::debug!(port, %target, "target reachable"),
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A fixed-address target's last known state (`None` for Docker targets and before the first probe).
    pub(super) fn healthy(&self) -> Option<bool> {
        self.health.as_ref().and_then(|h| *h.borrow())
    }
}
