//! The `tracing` subscriber of the project's binaries: the filter from `RUST_LOG` (default `info`), human-readable
//! lines on stderr, colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber for the whole process. Call once, first thing in `main`; a second call (or another
/// subscriber already installed) leaves the first in place.
pub fn init() {
    init_with_default("info");
}

/// [`init`] with another filter when `RUST_LOG` is unset (e.g. `warn` for a tool whose output is its point).
pub fn init_with_default(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
