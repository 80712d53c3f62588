//! An in-memory control service (registry and peer table) and a stand-in for an attested peer, shared by the
//! service's unit tests
//! (`src/control/service/tests.rs`) and the control listener's integration tests (`tests/control_http.rs`). Both
//! include this file with `#[path]`, so it names the gateway's types through the imports of the module that
//! includes it.

use super::{
    Admission, AppId, Arc, ControlService, Duration, ErrorBody, ErrorCode, Ipv4Addr, MemoryPeers,
    MemoryStore, Mutex, PeerAttestation, PublicKey, Registry, ResponseSettings,
};

/// The app the stand-in peer is an instance of.
pub(crate) const APP: &str = "aaaaaaaaaaaaaaaa";

/// A stand-in for a peer whose evidence the gateway verified: simulated SEV-SNP claims with `measurement`, valid
/// until `valid_until`. The policy of [`APP`] admits it unless `refused`; the gateway also knows `refused_app`,
/// whose policy refuses it; any other app is unknown.
#[derive(Debug)]
pub(crate) struct StandInPeer {
    /// The measurement byte of its claims.
    pub(crate) measurement: u8,
    /// When its evidence ends.
    pub(crate) valid_until: u64,
    /// Whether the policy of [`APP`] refuses it (a policy that changed under it).
    pub(crate) refused: bool,
    /// Another app the gateway knows, whose policy refuses it.
    pub(crate) refused_app: Option<&'static str>,
}

/// A peer of [`APP`] that its policy admits with `measurement` until `valid_until`.
pub(crate) const fn admitted(measurement: u8, valid_until: u64) -> StandInPeer {
    StandInPeer {
        measurement,
        valid_until,
        refused: false,
        refused_app: None,
    }
}

impl PeerAttestation for StandInPeer {
    fn authorize(
        &self,
        app_id: &AppId,
        _owner: Option<&attestation::owner::VerifiedPolicy>,
    ) -> Result<Admission, ErrorBody> {
        if app_id.as_str() == APP && !self.refused {
            return Ok(Admission {
                claims: test_support::claims::sim_snp(self.measurement),
                valid_until: self.valid_until,
            });
        }
        if self.is_app_id(app_id.as_str()) {
            return Err(ErrorBody::new(
                ErrorCode::PolicyRefused,
                format!(
                    "measurement {:02x}00 is not allowed for app {app_id}",
                    self.measurement
                ),
            ));
        }
        Err(ErrorBody::new(
            ErrorCode::AppUnknown,
            format!("app {app_id} is unknown"),
        ))
    }
    fn is_app_id(&self, id: &str) -> bool {
        id == APP || Some(id) == self.refused_app
    }
}

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
