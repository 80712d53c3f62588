//! The process edge shared by the `gateway` and `cvm-agent` binaries: what every long-running program of the
//! project does the same way before and after its own work.
//!
//! - [`config`]: reading a TOML configuration file in three steps (read, parse into the file's schema, convert
//!   into checked domain types), with one error type that names the file and lists every problem, and what `check-config` prints for it.
//! - [`logging`]: the `tracing` subscriber both binaries install (`RUST_LOG`, default `info`, to stderr).
//! - [`signal`]: the future that completes on SIGTERM or Ctrl-C, which both binaries pass to their `serve`.

pub mod config;
pub mod logging;
pub mod signal;

pub use config::{load_toml, ConfigError};
