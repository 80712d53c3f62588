//! What the registry remembers about one instance.

use std::net::Ipv4Addr;

use protocol::control::{AppId, InstanceId, PortPolicy, WireGuardKey};

/// One registered instance, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The instance id.
    pub instance_id: InstanceId,
    /// The app it belongs to (fixed at first registration).
    pub app_id: AppId,
    /// Its current WireGuard public key.
    pub public_key: WireGuardKey,
    /// Its stable tunnel address.
    pub tunnel_address: Ipv4Addr,
    /// The ports it exposes.
    pub ports: Vec<PortPolicy>,
    /// A one-line summary of the attestation it last registered with (platform and measurement).
    pub attestation: String,
    /// When it first registered, seconds since the Unix epoch.
    pub registered_at: u64,
    /// When it last registered, seconds since the Unix epoch.
    pub last_seen: u64,
}
