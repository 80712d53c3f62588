//! The `tracing` subscriber of the project's binaries: the filter from `RUST_LOG` (default `info`), human-readable
//! lines on stderr, colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber for the whole process. Call once, first thing in `main`; a second call (or another
/// subscriber already installed) leaves the first in place.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
