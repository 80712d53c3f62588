//! Errors of the tunnel endpoint.

use std::net::Ipv4Addr;

use crate::key::PublicKey;

/// What went wrong starting a tunnel endpoint or changing its peers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The TUN device could not be created or configured.
    #[error("TUN device {name}: {action}: {source}")]
    Tun {
        /// The interface name asked for.
        name: String,
        /// What was being done (opening `/dev/net/tun`, setting the address, ...).
        action: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The UDP socket could not be created, bound or configured.
    #[error("UDP socket on {addr}: {action}: {source}")]
    Udp {
        /// The address being bound.
        addr: std::net::SocketAddr,
        /// What was being done.
        action: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid tunnel configuration: {0}")]
    Config(String),
    /// A peer with this public key already exists.
    #[error("peer {0} already exists")]
    DuplicatePeer(PublicKey),
    /// No peer has this public key.
    #[error("no peer with public key {0}")]
    UnknownPeer(PublicKey),
    /// Another peer already owns this tunnel address.
    #[error("tunnel address {addr} already belongs to peer {owner}")]
    AddressInUse {
        /// The contested address.
        addr: Ipv4Addr,
        /// The peer that owns it.
        owner: PublicKey,
    },
    /// A peer was given this endpoint's own tunnel address.
    #[error("tunnel address {0} is this endpoint's own address and cannot be a peer's")]
    OwnAddress(Ipv4Addr),
    /// A peer was given this endpoint's own public key.
    #[error("public key {0} is this endpoint's own key and cannot be a peer's")]
    OwnKey(PublicKey),
    /// Every receiver index is taken (more than 16 million peers).
    #[error("no free peer index left")]
    IndexesExhausted,
    /// A key could not be parsed.
    #[error("invalid WireGuard key")]
    Key(#[from] crate::key::KeyError),
    /// The endpoint has been shut down.
    #[error("the tunnel endpoint has shut down")]
    Shutdown,
}
