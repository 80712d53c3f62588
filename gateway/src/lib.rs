//! The gateway: client listeners, SNI routing, TLS termination and passthrough, upstream selection, the
//! registration API, the instance registry and its store, the admin API and metrics.

pub mod accept;
pub mod cli;
pub mod config;
pub mod control;
pub mod proxy;
pub mod registry;
mod report;
pub mod run;
pub mod supervise;
