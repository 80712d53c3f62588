//! An in-memory control service (registry and peer table), shared by the service's unit tests
//! (`src/control/service/tests.rs`) and the control listener's integration tests (`tests/control_http.rs`). Both
//! include this file with `#[path]`, so it names the gateway's types through the imports of the module that
//! includes it.

use super::{
    Arc, ControlService, Duration, Ipv4Addr, MemoryPeers, MemoryStore, Mutex, PublicKey, Registry,
    ResponseSettings,
};

/// A service whose registry, in memory, gives leases of `lease` in 10.0.0.0/8 (the gateway at 10.0.0.1, its
/// endpoint 198.18.0.2:51820, base domain `apps.example.com`), and its in-memory peer table.
pub(crate) fn memory_service(lease: Duration) -> (ControlService, Arc<MemoryPeers>) {
    let registry = Registry::open(
        Box::new(MemoryStore::new()),
        "10.0.0.0/8".parse().unwrap(),
        Ipv4Addr::new(10, 0, 0, 1),
        lease,
    )
    .unwrap();
    let peers = Arc::new(MemoryPeers::default());
    let settings = ResponseSettings {
        gateway_key: PublicKey::from_bytes([0xee; 32]).unwrap(),
        gateway_endpoint: "198.18.0.2:51820".into(),
        gateway_address: Ipv4Addr::new(10, 0, 0, 1),
        prefix_len: 8,
        keepalive_secs: 25,
        reregister_secs: 300,
        base_domains: vec!["apps.example.com".into()],
    };
    (
        ControlService::new(Arc::new(Mutex::new(registry)), peers.clone(), settings),
        peers,
    )
}
