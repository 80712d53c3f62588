//! The WireGuard endpoint: `boringtun`'s protocol core (`noise::Tunn`) driven from tokio, with one UDP socket,
//! one TUN device and a peer table keyed by public key, receiver index and tunnel address.
//!
//! Each peer has exactly one tunnel address (a /32). A decrypted packet is delivered only if its source is
//! the sending peer's own address and its destination is this endpoint's address; anything else is dropped
//! and counted, so the endpoint never forwards from one peer to another. An optional [`InboundFilter`] further
//! limits what reaches the TUN device (the agent's declared TCP ports), refusing connection attempts elsewhere
//! with a reset. Peers can be added, updated and
//! removed while traffic flows. Per-peer health and counters are read as [`PeerStats`] snapshots.
//!
//! ```no_run
//! # async fn demo() -> Result<(), protocol::tunnel::TunnelError> {
//! use protocol::tunnel::{Endpoint, EndpointConfig, PeerConfig, PrivateKey};
//! let key = PrivateKey::generate();
//! let endpoint = Endpoint::start(EndpointConfig::new(key, 51820, "10.0.0.1".parse().unwrap(), 8)).await?;
//! let peer_key = PrivateKey::generate().public_key();
//! endpoint.add_peer(PeerConfig::new(peer_key, "10.0.0.2".parse().unwrap()))?;
//! println!("{:?}", endpoint.peer_stats());
//! endpoint.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The hot paths allocate nothing per packet and make one system call per batch on the UDP side
//! (`recvmmsg`/`sendmmsg`); see [`Endpoint`] for the tasks and how they stop.
#![deny(unsafe_code)]

mod config;
mod endpoint;
mod error;
mod filter;
mod gro;
mod ip;
mod netdev;
mod offload;
mod peer;
mod receive;
mod route;
mod send;
mod shared;
mod stats;
mod supervisor;
#[cfg(test)]
mod testpkt;
mod timers;
mod tun;
mod udp;

pub use crate::key::{PrivateKey, PublicKey};
pub use config::{
    EndpointConfig, PeerConfig, DEFAULT_HEALTH_WINDOW, DEFAULT_MTU, DEFAULT_REKEY_AFTER, MTU_RANGE,
    TIMER_TICK,
};
pub use endpoint::{Endpoint, ShutdownHandle};
pub use error::TunnelError;
pub use filter::InboundFilter;
pub use netdev::{InterfaceName, InterfaceNameError, Mtu, MtuError};
pub use stats::{EndpointStats, PeerDrops, PeerStats};
pub use supervisor::StopReason;
