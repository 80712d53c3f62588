//! The client-facing data plane: host-name routing, ClientHello reading, TLS termination and passthrough,
//! upstream choice, the byte relay, limits, the admin listener and metrics.

pub mod admin;
pub mod app_policy;
pub mod client_hello;
pub mod config;
pub mod directory;
pub mod hostname;
pub mod limits;
pub mod metrics;
pub mod proxy_protocol;
pub mod relay;
pub mod replay;
pub mod self_attestation;
pub mod server;
pub mod service;
pub mod tls;
pub mod upstream;
