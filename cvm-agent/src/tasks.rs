//! Supervised tasks: one way to stop them, every one tracked, and the first one that ends on its own reported.
//!
//! A [`Tasks`] is owned by whatever starts the tasks (the forwarder, Docker discovery, the agent itself). Its
//! tasks stop when [`Tasks::shutdown`] is called or the owner drops it (both cancel its [`CancellationToken`]);
//! `shutdown` also waits until every task has finished, so nothing outlives its owner. A task spawned with
//! [`Tasks::spawn_critical`] is meant to run until cancelled: if it returns, fails or panics before that,
//! [`Tasks::ended`] says which and why, so the owner can stop too instead of running on without it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An error a task ended with.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a critical task ended before it was asked to stop.
#[derive(Debug, thiserror::Error)]
pub enum TaskEnd {
    /// It returned, which it never should.
    #[error("it returned")]
    Returned,
    /// It failed.
    #[error("it failed: {0}")]
    Failed(#[source] TaskError),
    /// It panicked.
    #[error("it panicked: {0}")]
    Panicked(String),
}

/// A critical task that ended, and how.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{task}: {end}")]
pub struct Ended {
    /// The task's name.
    pub task: &'static str,
    /// How it ended.
    #[source]
    pub end: Arc<TaskEnd>,
}

#[derive(Debug, Default)]
struct Report {
    first: Mutex<Option<Ended>>,
    notify: Notify,
}

/// The tasks of one owner. See the module documentation.
#[derive(Debug)]
pub struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
    report: Arc<Report>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    /// An empty set with its own cancellation.
    pub fn new() -> Self {
        Self::with_token(CancellationToken::new())
    }

    /// An empty set stopped by `parent` too (a child of it).
    pub fn child_of(parent: &CancellationToken) -> Self {
        Self::with_token(parent.child_token())
    }

    fn with_token(cancel: CancellationToken) -> Self {
        Self {
            cancel,
            tracker: TaskTracker::new(),
            report: Arc::default(),
        }
    }

    /// The token that stops these tasks (cancelled by [`Tasks::shutdown`] and on drop).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Spawns `task`, stopped (dropped at its next await) on cancellation. Its end is not reported.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            cancel.run_until_cancelled(task).await;
        });
    }

    /// Spawns a task that must run until cancelled; if it ends before that, [`Tasks::ended`] reports it. The
    /// task is dropped at its next await on cancellation.
    pub fn spawn_critical<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.spawn_critical_graceful(name, |cancel| async move {
            cancel.run_until_cancelled(task).await.unwrap_or(Ok(()))
        });
    }

    /// Like [`Tasks::spawn_critical`], but the task gets the token and stops itself when it is cancelled (to
    /// shut down what it owns in order); what it returns after cancellation is not reported.
    pub fn spawn_critical_graceful<F>(
        &self,
        name: &'static str,
        task: impl FnOnce(CancellationToken) -> F,
    ) where
        F: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        let report = self.report.clone();
        let task = task(cancel.clone());
        self.tracker.spawn(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            if cancel.is_cancelled() {
                return;
            }
            let end = match outcome {
                Ok(Ok(())) => TaskEnd::Returned,
                Ok(Err(e)) => TaskEnd::Failed(e),
                Err(panic) => TaskEnd::Panicked(panic_message(panic.as_ref())),
            };
            let ended = Ended {
                task: name,
                end: Arc::new(end),
            };
            if let Ok(mut first) = report.first.lock() {
                first.get_or_insert(ended);
            }
            report.notify.notify_waiters();
        });
    }

    /// Waits until a critical task ends on its own; returns the first that did. Pending forever if none does.
    pub async fn ended(&self) -> Ended {
        loop {
            let notified = self.report.notify.notified();
            if let Some(ended) = self.report.first.lock().ok().and_then(|f| f.clone()) {
                return ended;
            }
            notified.await;
        }
    }

    /// Stops every task and waits until all have finished.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_critical_task_that_panics_or_fails_is_reported_by_name() {
        let tasks = Tasks::new();
        tasks.spawn_critical("quiet", std::future::pending());
        tasks.spawn_critical("broken", async { panic!("out of luck") });
        let ended = tokio::time::timeout(Duration::from_secs(5), tasks.ended())
            .await
            .unwrap();
        assert_eq!(ended.task, "broken");
        assert!(matches!(&*ended.end, TaskEnd::Panicked(m) if m == "out of luck"));
        assert_eq!(ended.to_string(), "broken: it panicked: out of luck");

        let tasks = Tasks::new();
        tasks.spawn_critical("failing", async { Err("no socket".into()) });
        let ended = tasks.ended().await;
        assert_eq!(ended.to_string(), "failing: it failed: no socket");
    }

    #[tokio::test]
    async fn shutdown_stops_and_waits_for_every_task_and_reports_nothing() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        tasks.spawn_critical("forever", std::future::pending());
        tokio::time::timeout(Duration::from_secs(5), tasks.shutdown())
            .await
            .unwrap();
        // The task was dropped: its sender is gone.
        assert!(rx.await.is_err());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), tasks.ended())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn dropping_the_owner_stops_the_tasks() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tasks = Tasks::new();
        tasks.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        drop(tasks);
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap_err();
    }
}
