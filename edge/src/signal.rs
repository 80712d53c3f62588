//! The shutdown signal of a long-running binary: SIGTERM (what a supervisor such as systemd or Docker sends) or
//! Ctrl-C.

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
