//! Command-line subcommands implemented in the library so that they can be tested and reused.

pub mod app;
pub mod attestation;
pub mod config_digest;
