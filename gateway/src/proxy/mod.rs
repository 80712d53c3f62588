//! The client-facing data plane: host-name routing, ClientHello reading, TLS termination and passthrough,
//! upstream choice, the byte relay, limits, the admin listener and metrics.

pub mod hostname;
