//! Critical tasks: a set of tasks that must all run until shutdown, stopped together.
//!
//! Every task of a [`Critical`] set gets a name and runs until the set's cancellation token is cancelled. The
//! first task that ends before that (it returned, failed or panicked) is the set's outcome: the token is
//! cancelled so the others stop too, and [`Critical::wait`] reports which one ended and why, after all of them
//! have ended. Dropping the set cancels the token and aborts whatever still runs, so no task outlives its owner.
//!
//! ```no_run
//! # async fn demo() {
//! use gateway::supervise::Critical;
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let mut tasks = Critical::<std::io::Error>::new(&shutdown);
//! let stop = tasks.token();
//! tasks.spawn("ticker", async move {
//!     stop.cancelled().await;
//!     Ok(())
//! });
//! shutdown.cancel();
//! assert!(tasks.wait().await.is_ok());
//! # }
//! ```

use std::future::Future;

use futures::FutureExt as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::report::{error_chain, panic_message};

/// Why a critical task ended before shutdown.
#[derive(Debug, thiserror::Error)]
pub enum StopReason<E> {
    /// It returned without an error, though nothing asked it to stop.
    #[error("it ended on its own")]
    Ended,
    /// It failed.
    #[error("it failed")]
    Failed(#[source] E),
    /// It panicked.
    #[error("it panicked: {0}")]
    Panicked(String),
}

/// The critical task that ended first, before shutdown, and why.
#[derive(Debug, thiserror::Error)]
#[error("{part} stopped")]
pub struct Stopped<E> {
    /// The task's name.
    pub part: &'static str,
    /// Why it ended.
    #[source]
    pub reason: StopReason<E>,
}

/// A set of named tasks that all run until its token is cancelled; see the module documentation.
#[derive(Debug)]
pub struct Critical<E> {
    stop: CancellationToken,
    tasks: JoinSet<Ended<E>>,
}

/// A task's name and how it ended.
type Ended<E> = (&'static str, Result<(), StopReason<E>>);

impl<E> Drop for Critical<E> {
    fn drop(&mut self) {
        // The join set aborts its tasks when dropped; cancelling first lets the ones that look at the token
        // (and anything else they handed it to) see why.
        self.stop.cancel();
    }
}

impl<E> Critical<E>
where
    E: std::error::Error + Send + 'static,
{
    /// An empty set whose token is a child of `shutdown`: cancelling `shutdown` stops the set, and the set
    /// stopping (a task ended, or the set was dropped) does not cancel `shutdown`.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            stop: shutdown.child_token(),
            tasks: JoinSet::new(),
        }
    }

    /// The set's token: cancelled at shutdown and when a task of the set ended; every task must stop on it.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts `task` as the critical part `part`.
    pub fn spawn<F>(&mut self, part: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.tasks.spawn(async move {
            let outcome = match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StopReason::Failed(e)),
                Err(panic) => Err(StopReason::Panicked(panic_message(panic.as_ref()))),
            };
            (part, outcome)
        });
    }

    /// Waits until every task has ended. Returns the first that ended before the token was cancelled, and why;
    /// once one has, the token is cancelled so that the others stop too.
    pub async fn wait(&mut self) -> Result<(), Stopped<E>> {
        let mut first = None;
        while let Some(joined) = self.tasks.join_next().await {
            self.record(joined, &mut first);
        }
        first.map_or(Ok(()), Err)
    }

    /// Waits until `shutdown` completes or a task ends, whichever comes first; then stops every task and waits
    /// for them as [`Critical::wait`] does.
    pub async fn run_until(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Stopped<E>> {
        let mut first = None;
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down");
                self.stop.cancel();
            }
            Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                self.record(joined, &mut first);
            }
        }
        while let Some(joined) = self.tasks.join_next().await {
            self.record(joined, &mut first);
        }
        first.map_or(Ok(()), Err)
    }

    /// Notes how a task ended: the first to end before the token was cancelled becomes `first`, and cancels it.
    fn record(
        &self,
        joined: Result<Ended<E>, tokio::task::JoinError>,
        first: &mut Option<Stopped<E>>,
    ) {
        let (part, outcome) = match joined {
            Ok(ended) => ended,
            // Only an abort ends a task without an outcome, and only dropping the set aborts.
            Err(e) => {
                tracing::warn!(error = %e, "a critical task was aborted");
                return;
            }
        };
        let reason = match outcome {
            Ok(()) if self.stop.is_cancelled() => return,
            Ok(()) => StopReason::Ended,
            Err(reason) => reason,
        };
        let stopped = Stopped { part, reason };
        if first.is_none() {
            tracing::error!(part, error = %error_chain(&stopped), "a critical part stopped; stopping the rest");
            self.stop.cancel();
            *first = Some(stopped);
        } else {
            tracing::warn!(part, error = %error_chain(&stopped), "another part stopped while stopping");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A task that runs until its token is cancelled.
    async fn until_cancelled(token: CancellationToken) -> Result<(), std::io::Error> {
        token.cancelled().await;
        Ok(())
    }

    /// A task that panics after a moment.
    async fn crash() -> Result<(), std::io::Error> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        panic!("invariant broken")
    }

    #[tokio::test]
    async fn a_panicking_task_stops_the_others_and_is_named() {
        let shutdown = CancellationToken::new();
        let mut tasks = Critical::new(&shutdown);
        tasks.spawn("steady", until_cancelled(tasks.token()));
        tasks.spawn("crashing", crash());
        let stopped = tokio::time::timeout(
            Duration::from_secs(5),
            tasks.run_until(std::future::pending()),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(stopped.part, "crashing");
        assert!(
            matches!(&stopped.reason, StopReason::Panicked(m) if m == "invariant broken"),
            "{stopped:?}"
        );
        assert!(tasks.token().is_cancelled());
        assert!(!shutdown.is_cancelled(), "the caller's token is left alone");
    }

    #[tokio::test]
    async fn a_failing_or_returning_task_is_reported_with_its_error() {
        let shutdown = CancellationToken::new();
        let mut tasks = Critical::new(&shutdown);
        tasks.spawn("steady", until_cancelled(tasks.token()));
        tasks.spawn("socket", async { Err(std::io::Error::other("gone")) });
        let stopped = tasks.wait().await.unwrap_err();
        assert_eq!(stopped.part, "socket");
        assert_eq!(error_chain(&stopped), "socket stopped: it failed: gone");

        let mut tasks = Critical::<std::io::Error>::new(&shutdown);
        tasks.spawn("quitter", async { Ok(()) });
        let stopped = tasks.run_until(std::future::pending()).await.unwrap_err();
        assert!(matches!(stopped.reason, StopReason::Ended), "{stopped:?}");
    }

    #[tokio::test]
    async fn shutdown_stops_every_task_without_error() {
        let shutdown = CancellationToken::new();
        let mut tasks = Critical::new(&shutdown);
        for part in ["one", "two"] {
            tasks.spawn(part, until_cancelled(tasks.token()));
        }
        let signal = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            signal.cancel();
        });
        tasks.wait().await.unwrap();
        let mut tasks = Critical::new(&CancellationToken::new());
        tasks.spawn("one", until_cancelled(tasks.token()));
        tasks.run_until(async {}).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_the_set_aborts_its_tasks() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(dropped.clone());
        let mut tasks = Critical::<std::io::Error>::new(&CancellationToken::new());
        tasks.spawn("holder", async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(tasks);
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the task outlived its set");
    }
}
