//! Waiting for a condition instead of sleeping: a test names what it waits for (a counter reaching a value, a
//! line in a log, a port accepting connections) and how long it may take; a timeout says what was awaited and
//! why the last check failed.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(50);

/// Checks `check` until it returns `Ok(Some(value))` or `timeout` passes; the error of the last attempt
/// explains a timeout.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            return Err(timed_out(timeout, what, last));
        }
        std::thread::sleep(POLL);
    }
}

/// The asynchronous [`wait_for`]: awaits `check` until it returns `Ok(Some(value))` or `timeout` passes, without
/// blocking the runtime between attempts.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            return Err(timed_out(timeout, what, last));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn timed_out(timeout: Duration, what: &str, last: Option<anyhow::Error>) -> anyhow::Error {
    match last {
        Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
        None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
    }
}
