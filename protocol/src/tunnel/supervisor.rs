//! How the endpoint's data-plane threads run, stop, and say why they stopped.
//!
//! One [`CancellationToken`] stops everything. Each thread runs its task on a single-threaded tokio runtime
//! until the token is cancelled; if the task fails, panics, or ends on its own, the thread records why
//! ([`StopReason`]) and cancels the token, so the other threads stop too and the owner waiting on
//! `Endpoint::stopped` learns the reason. The first reason recorded is the one reported.

use std::future::Future;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

/// Why an endpoint stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// Its owner asked it to stop (`Endpoint::shutdown`, a `ShutdownHandle`, or dropping the `Endpoint`).
    #[error("the tunnel endpoint was asked to stop")]
    Requested,
    /// A data-plane thread failed: an unexpected socket or device error, or its runtime could not be built.
    #[error("tunnel thread {thread} failed: {source}")]
    Failed {
        /// The thread's name (`tunnel-rx`, `tunnel-tx`).
        thread: &'static str,
        /// What failed.
        #[source]
        source: Arc<io::Error>,
    },
    /// A data-plane thread panicked.
    #[error("tunnel thread {thread} panicked: {message}")]
    Panicked {
        /// The thread's name.
        thread: &'static str,
        /// The panic's message (or a placeholder when it carried something other than a string).
        message: String,
    },
    /// A data-plane thread's task returned although nobody asked it to stop.
    #[error("tunnel thread {thread} ended on its own")]
    Ended {
        /// The thread's name.
        thread: &'static str,
    },
}

/// The stop signal shared by an endpoint, its handles and its threads; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Stop {
    /// Stops everything. The first reason given is kept; later calls only make sure the token is cancelled.
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Whether the stop was signalled.
    pub(crate) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why it stopped, once it has.
    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().cloned()
    }

    /// Waits for the stop and tells why.
    pub(crate) async fn stopped(&self) -> StopReason {
        self.token.cancelled().await;
        // `stop` sets the reason before it cancels.
        self.reason().unwrap_or(StopReason::Requested)
    }
}

/// Runs `task` on a new thread named `name`, with its own single-threaded runtime, until `stop` is
/// signalled. If the task fails, panics or returns first, the thread stops everything with the reason.
pub(crate) fn spawn_thread<F, Fut>(
    name: &'static str,
    stop: Stop,
    task: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<()>>,
{
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let token = stop.token.clone();
        // Unwind safety: after a panic nothing of the task is used again; the shared state it leaves
        // (peer locks, counters) stays usable, and the endpoint stops.
        let outcome = panic::catch_unwind(AssertUnwindSafe(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            runtime.block_on(async move {
                tokio::select! {
                    () = token.cancelled() => Ok(()),
                    result = task() => result,
                }
            })
        }));
        let reason = match outcome {
            Ok(Ok(())) if stop.is_stopped() => return,
            Ok(Ok(())) => StopReason::Ended { thread: name },
            Ok(Err(source)) => StopReason::Failed {
                thread: name,
                source: Arc::new(source),
            },
            Err(payload) => StopReason::Panicked {
                thread: name,
                message: panic_message(payload.as_ref()),
            },
        };
        tracing::error!(thread = name, reason = %reason, "tunnel thread stopped; stopping the endpoint");
        stop.stop(reason);
    })
}

/// The message of a panic, as `panic!` formats it.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `a` and the task behind `b` side by side until one of them ends; a panic of `b` carries on as a
/// panic here, so the thread reports it.
pub(crate) async fn either(
    a: impl Future<Output = io::Result<()>>,
    mut b: tokio::task::JoinHandle<io::Result<()>>,
) -> io::Result<()> {
    let result = tokio::select! {
        result = a => result,
        joined = &mut b => match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => panic::resume_unwind(e.into_panic()),
            Err(e) => Err(io::Error::other(e)),
        },
    };
    b.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("in time")
    }

    fn forever() -> impl Future<Output = io::Result<()>> {
        std::future::pending()
    }

    async fn explode() -> io::Result<()> {
        panic!("injected failure {}", 7)
    }

    async fn timers_broke() -> io::Result<()> {
        tokio::task::yield_now().await;
        panic!("timers broke")
    }

    #[tokio::test]
    async fn a_panicking_thread_stops_the_others_and_says_why() {
        let stop = Stop::default();
        let calm = spawn_thread("calm", stop.clone(), forever).unwrap();
        let bad = spawn_thread("bad", stop.clone(), explode).unwrap();
        let reason = within(stop.stopped()).await;
        assert!(
            matches!(&reason, StopReason::Panicked { thread: "bad", message } if message == "injected failure 7"),
            "{reason:?}"
        );
        assert!(reason
            .to_string()
            .contains("bad panicked: injected failure 7"));
        // Both threads end; the calm one because the token was cancelled.
        calm.join().unwrap();
        bad.join().unwrap();
        assert!(matches!(stop.reason(), Some(StopReason::Panicked { .. })));
    }

    #[tokio::test]
    async fn a_panic_in_a_side_task_is_reported_as_the_threads() {
        let stop = Stop::default();
        let t = spawn_thread("tx", stop.clone(), || async {
            either(forever(), tokio::spawn(timers_broke())).await
        })
        .unwrap();
        let reason = within(stop.stopped()).await;
        assert!(
            matches!(&reason, StopReason::Panicked { thread: "tx", message } if message == "timers broke"),
            "{reason:?}"
        );
        t.join().unwrap();
    }

    #[tokio::test]
    async fn a_failing_or_ending_thread_stops_with_its_reason() {
        let stop = Stop::default();
        let t = spawn_thread("rx", stop.clone(), || async {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "socket gone"))
        })
        .unwrap();
        let reason = within(stop.stopped()).await;
        match &reason {
            StopReason::Failed { thread, source } => {
                assert_eq!(*thread, "rx");
                assert_eq!(source.kind(), io::ErrorKind::BrokenPipe);
                assert!(std::error::Error::source(&reason).is_some());
            }
            other => panic!("{other:?}"),
        }
        t.join().unwrap();

        let stop = Stop::default();
        let t = spawn_thread("rx", stop.clone(), || async { Ok(()) }).unwrap();
        assert!(matches!(
            within(stop.stopped()).await,
            StopReason::Ended { thread: "rx" }
        ));
        t.join().unwrap();
    }

    #[tokio::test]
    async fn a_requested_stop_is_reported_as_requested_and_the_first_reason_wins() {
        let stop = Stop::default();
        let t = spawn_thread("rx", stop.clone(), forever).unwrap();
        assert!(stop.reason().is_none());
        stop.stop(StopReason::Requested);
        assert!(matches!(
            within(stop.stopped()).await,
            StopReason::Requested
        ));
        t.join().unwrap();
        stop.stop(StopReason::Ended { thread: "late" });
        assert!(matches!(stop.reason(), Some(StopReason::Requested)));
    }
}
