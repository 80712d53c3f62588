//! The client-facing data plane: host-name routing, ClientHello reading, TLS termination and passthrough,
//! upstream choice, the byte relay, limits, the admin listener and metrics.

pub mod client_hello;
pub mod directory;
pub mod hostname;
pub mod proxy_protocol;
pub mod relay;
pub mod tls;
pub mod upstream;
