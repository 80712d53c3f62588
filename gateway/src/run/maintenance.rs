//! The gateway's periodic upkeep: RA-TLS certificate renewal, app policy reload when its file changes, the
//! revocation of instances the reloaded policy no longer admits or whose evidence ended without renewal, and the
//! expiry of instances not seen for the configured time. Every tick (2 s) re-checks each instance against the policy
//! in force and the end of its evidence, so a changed policy or ended evidence takes it out of rotation within
//! one tick (a check is a few comparisons of stored claims; the registry lock is held for the scan). Renewal (which attests a fresh key),
//! revocation and expiry (which write to the registry) run on the blocking pool, never on the async workers.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attestation::policy::{PolicyFile, Reload};
use attestation::ratls::RaTlsIdentity;
use tokio_util::sync::CancellationToken;

use crate::control::operator::OperatorApps;
use crate::control::ControlService;

/// How often the maintenance task wakes.
const MAINTENANCE_TICK: Duration = Duration::from_secs(2);

/// How often expired instances are looked for: every 30 s, or a quarter of the expiry time when that is shorter
/// (so an instance is removed within 1.25 times the expiry time), but not more often than every 2 s.
pub(crate) fn expiry_sweep_interval(expire_after: Duration) -> Duration {
    (expire_after / 4).clamp(MAINTENANCE_TICK, Duration::from_secs(30))
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the maintenance task looks after.
pub(crate) struct Maintenance {
    /// The registration service, whose instances expire.
    pub(crate) service: ControlService,
    /// The gateway's RA-TLS identity, renewed when due.
    pub(crate) identity: Arc<RaTlsIdentity>,
    /// The operator's apps file, reloaded when it changes.
    pub(crate) policy: Arc<PolicyFile<OperatorApps>>,
    /// How often expired instances are removed.
    pub(crate) sweep: Duration,
}

impl Maintenance {
    /// Certificate renewal, policy reload on change (checked every 2 s) and instance expiry (every `sweep`),
    /// until `stop` is cancelled.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(MAINTENANCE_TICK);
        let mut last_expiry = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            self.reload_policy();
            self.renew_certificate().await;
            self.revoke().await;
            if last_expiry.elapsed() >= self.sweep {
                last_expiry = Instant::now();
                let service = self.service.clone();
                let expired = tokio::task::spawn_blocking(move || {
                    service.expire(unix_secs(SystemTime::now()))
                });
                if let Err(e) = expired.await {
                    tracing::error!(error = %e, "instance expiry task failed");
                }
            }
        }
    }

    /// Reloads the app policy if its file changed.
    fn reload_policy(&self) {
        match self.policy.reload_if_changed() {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                tracing::info!(path = %self.policy.path().display(), "the operator's apps file reloaded")
            }
            Reload::Failed(e) => {
                tracing::error!(error = %e, "reloading the operator's apps file failed; keeping the previous one")
            }
        }
    }

    /// Removes the instances the policy in force no longer admits, or whose evidence ended.
    async fn revoke(&self) {
        let service = self.service.clone();
        let policy = self.policy.current();
        let revoked = tokio::task::spawn_blocking(move || {
            service.revoke_under(unix_secs(SystemTime::now()), |record, owner| {
                super::attest::still_admitted(&policy, owner, record)
            })
        });
        match revoked.await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(removed = n, "instances taken out of rotation"),
            Err(e) => tracing::error!(error = %e, "revocation task failed"),
        }
    }

    async fn renew_certificate(&self) {
        let identity = self.identity.clone();
        match tokio::task::spawn_blocking(move || identity.renew_if_due(SystemTime::now())).await {
            Ok(Ok(true)) => {
                let not_after = unix_secs(self.identity.certificate().not_after());
                tracing::info!(not_after, "RA-TLS certificate renewed")
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "RA-TLS certificate renewal failed; will retry")
            }
            Err(e) => tracing::error!(error = %e, "renewal task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_sweeps_scale_with_short_expiry_times() {
        let secs = |s| expiry_sweep_interval(Duration::from_secs(s)).as_secs();
        assert_eq!(secs(86_400), 30);
        assert_eq!(secs(120), 30);
        assert_eq!(secs(20), 5);
        assert_eq!(secs(4), 2);
    }
}
