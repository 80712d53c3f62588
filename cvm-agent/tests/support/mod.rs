//! What the agent's Docker tests share beyond `test_support::docker`: waiting on the agent's own discovery view.

use std::time::Duration;

use cvm_agent::docker::Discovery;

/// Waits until `check` holds for the discovery view, up to `timeout`.
pub(crate) async fn wait_for(
    discovery: &Discovery,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Discovery) -> bool,
) {
    let mut changes = discovery.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    while !check(discovery) {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }
}
