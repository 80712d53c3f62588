//! The shutdown signal of a long-running binary: SIGTERM (what a supervisor such as systemd or Docker sends) or
//! Ctrl-C, and running a program's main future on a fresh runtime until it ends.

use std::future::Future;

/// Runs `serve(shutdown)` to completion on a new multi-threaded runtime, where `shutdown` is [`shutdown()`]; the
/// error is that of creating the runtime.
pub fn run_until_signal<F: Future>(
    serve: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Runtime::new()?;
    Ok(runtime.block_on(serve(Box::pin(shutdown()))))
}

/// Completes when the process receives SIGTERM or SIGINT. If SIGTERM cannot be listened for, that is logged and
/// only Ctrl-C stops the program.
pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the program");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
