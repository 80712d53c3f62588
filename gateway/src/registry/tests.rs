use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use protocol::control::{PortPolicy, TargetState, PROTOCOL_VERSION};

use super::*;

/// A scratch directory (removed on drop) holding one registry database.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn db(&self) -> PathBuf {
        self.0.path().join("registry.sqlite")
    }
}

fn net() -> TunnelNetwork {
    "10.0.0.0/8".parse().unwrap()
}

const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DAY: Duration = Duration::from_secs(86400);

fn open(path: &std::path::Path) -> Registry {
    open_expiring(path, DAY)
}

/// The registry in the database at `path`, expiring instances after `expire_after`.
fn open_expiring(path: &std::path::Path, expire_after: Duration) -> Registry {
    Registry::open(
        Box::new(SqliteStore::open(path).unwrap()),
        net(),
        GW,
        expire_after,
    )
    .unwrap()
}

fn key(b: u8) -> PublicKey {
    PublicKey::from_bytes([b; 32]).unwrap()
}

fn request(app: &str, instance: &str, k: u8) -> RegisterRequest {
    RegisterRequest {
        version: PROTOCOL_VERSION,
        app_id: app.parse().unwrap(),
        instance_id: instance.parse().unwrap(),
        wireguard_public_key: key(k),
        ports: vec![
            PortPolicy::plain(80),
            PortPolicy {
                port: 443,
                proxy_protocol: true,
                target_state: Some(TargetState::Down),
            },
        ],
        app_policy: None,
    }
}

/// An admission valid for as long as the tests run.
fn admitted() -> Admission {
    super::record::fixtures::admission(0xaa, u64::MAX)
}

/// Registers instance `instance` of `app` with key `k` (the ports of [`request`]) at `now`, [`admitted`].
fn admit(
    r: &mut Registry,
    app: &str,
    instance: &str,
    k: u8,
    now: u64,
) -> Result<RegisterOutcome, RegisterError> {
    r.register(&request(app, instance, k), &admitted(), now)
}

const APP: &str = "aaaaaaaaaaaaaaaa";
const OTHER_APP: &str = "bbbbbbbbbbbbbbbb";

#[test]
fn addresses_are_distinct_stable_and_survive_reopening() {
    let dir = TempDir::new();
    let (a1, a2) = {
        let mut r = open(&dir.db());
        let one = admit(&mut r, APP, "11111111", 1, 100).unwrap();
        let two = admit(&mut r, APP, "22222222", 2, 100).unwrap();
        assert_eq!(one.change, Change::New);
        assert_ne!(one.record.tunnel_address, two.record.tunnel_address);
        assert_ne!(one.record.tunnel_address, GW);
        let again = admit(&mut r, APP, "11111111", 1, 150).unwrap();
        assert_eq!(again.change, Change::Refreshed);
        assert_eq!(again.record.tunnel_address, one.record.tunnel_address);
        assert_eq!(again.record.registered_at, 100);
        (one.record.tunnel_address, two.record.tunnel_address)
    };
    let mut r = open(&dir.db());
    assert_eq!(r.len(), 2);
    let one = r.get(&"11111111".parse().unwrap()).unwrap().clone();
    assert_eq!(one.tunnel_address, a1);
    assert_eq!(one.last_seen, 150);
    assert_eq!(one.ports, request(APP, "11111111", 1).ports);
    assert_eq!(r.by_key(&key(2)).unwrap().tunnel_address, a2);
    let three = admit(&mut r, APP, "33333333", 3, 200).unwrap();
    assert!(three.record.tunnel_address != a1 && three.record.tunnel_address != a2);
}

#[test]
fn key_change_keeps_the_address_and_frees_the_old_key() {
    let dir = TempDir::new();
    let mut r = open(&dir.db());
    let first = admit(&mut r, APP, "11111111", 1, 1).unwrap();
    let changed = admit(&mut r, APP, "11111111", 9, 2).unwrap();
    assert_eq!(changed.change, Change::KeyChanged { old_key: key(1) });
    assert_eq!(changed.record.tunnel_address, first.record.tunnel_address);
    assert!(r.by_key(&key(1)).is_none());
    // The old key is free for another instance now.
    admit(&mut r, APP, "22222222", 1, 3).unwrap();
    drop(r);
    let r = open(&dir.db());
    assert_eq!(r.by_key(&key(9)).unwrap().instance_id.as_str(), "11111111");
}

#[test]
fn duplicate_key_and_app_switch_are_refused_and_change_nothing() {
    let dir = TempDir::new();
    let mut r = open(&dir.db());
    admit(&mut r, APP, "11111111", 1, 1).unwrap();
    let before: Vec<_> = SqliteStore::open(&dir.db()).unwrap().load_all().unwrap();

    let e = admit(&mut r, APP, "22222222", 1, 2).unwrap_err();
    assert!(matches!(&e, RegisterError::KeyInUse { holder, .. } if holder.as_str() == "11111111"));
    assert_eq!(e.to_body().error, ErrorCode::KeyInUse);
    assert_eq!(e.to_body().http_status(), 409);

    let e = admit(&mut r, OTHER_APP, "11111111", 1, 2).unwrap_err();
    assert!(matches!(e, RegisterError::InstanceBoundToOtherApp { .. }));
    assert!(e.to_body().message.contains(APP), "{}", e.to_body().message);

    assert_eq!(r.len(), 1);
    let after: Vec<_> = SqliteStore::open(&dir.db()).unwrap().load_all().unwrap();
    assert_eq!(before, after);
}

#[test]
fn expiry_frees_addresses_and_rows() {
    let dir = TempDir::new();
    let mut r = open_expiring(&dir.db(), Duration::from_secs(100));
    let old = admit(&mut r, APP, "11111111", 1, 1000).unwrap().record;
    admit(&mut r, APP, "22222222", 2, 1050).unwrap();
    assert!(
        r.expire(1100).unwrap().is_empty(),
        "nothing is older than 100 s yet"
    );
    let removed = r.expire(1101).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].instance_id, old.instance_id);
    assert!(r.by_key(&key(1)).is_none());
    r.touch(&"22222222".parse().unwrap(), 1200).unwrap();
    assert!(
        r.expire(1250).unwrap().is_empty(),
        "touch keeps an instance alive"
    );
    drop(r);
    let r = open(&dir.db());
    assert_eq!(r.len(), 1);
}

#[test]
fn pool_exhaustion_is_an_error_not_a_collision() {
    let mut r = Registry::open(
        Box::new(MemoryStore::new()),
        "10.7.0.0/30".parse().unwrap(),
        Ipv4Addr::new(10, 7, 0, 1),
        DAY,
    )
    .unwrap();
    admit(&mut r, APP, "11111111", 1, 1).unwrap();
    let e = admit(&mut r, APP, "22222222", 2, 1).unwrap_err();
    assert!(matches!(e, RegisterError::PoolExhausted { .. }));
    assert_eq!(e.to_body().error, ErrorCode::AddressPoolExhausted);
}

#[test]
fn addresses_outside_a_changed_network_are_reassigned() {
    let dir = TempDir::new();
    let mut r = open(&dir.db());
    admit(&mut r, APP, "11111111", 1, 1).unwrap();
    drop(r);
    let r = Registry::open(
        Box::new(SqliteStore::open(&dir.db()).unwrap()),
        "172.20.0.0/16".parse().unwrap(),
        Ipv4Addr::new(172, 20, 0, 1),
        DAY,
    )
    .unwrap();
    let addr = r.get(&"11111111".parse().unwrap()).unwrap().tunnel_address;
    assert!(r.network().contains(addr), "{addr}");
    drop(r);
    let stored = SqliteStore::open(&dir.db()).unwrap().load_all().unwrap();
    assert_eq!(stored[0].tunnel_address, addr);
}

#[test]
fn migrations_upgrade_old_databases_and_refuse_newer_ones() {
    let dir = TempDir::new();
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "CREATE TABLE instances (instance_id TEXT PRIMARY KEY NOT NULL, app_id TEXT NOT NULL,
               public_key BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
               tunnel_address INTEGER NOT NULL UNIQUE, attestation TEXT NOT NULL DEFAULT '',
               registered_at INTEGER NOT NULL, last_seen INTEGER NOT NULL) STRICT;
             CREATE INDEX instances_app ON instances (app_id);
             CREATE INDEX instances_last_seen ON instances (last_seen);
             CREATE TABLE ports (instance_id TEXT NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
               port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535), proxy_protocol INTEGER NOT NULL,
               PRIMARY KEY (instance_id, port)) STRICT;
             PRAGMA user_version = 1;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO instances VALUES ('11111111', ?1, ?2, ?3, '', 5, 6)",
            rusqlite::params![
                APP,
                key(4).as_bytes().as_slice(),
                i64::from(u32::from(Ipv4Addr::new(10, 0, 0, 9)))
            ],
        )
        .unwrap();
        conn.execute("INSERT INTO ports VALUES ('11111111', 8080, 1)", [])
            .unwrap();
    }
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let r = Registry::open(Box::new(store), net(), GW, DAY).unwrap();
    let rec = r.get(&"11111111".parse().unwrap()).unwrap();
    assert_eq!(rec.tunnel_address, Ipv4Addr::new(10, 0, 0, 9));
    assert_eq!(
        rec.ports,
        vec![PortPolicy {
            port: 8080,
            proxy_protocol: true,
            target_state: None
        }]
    );
    drop(r);

    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&dir.db()),
        Err(StoreError::SchemaTooNew { .. })
    ));
}

/// A store whose writes fail, to show that a failed write leaves memory unchanged.
struct FailingStore;

impl RegistryStore for FailingStore {
    fn load_all(&mut self) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn upsert(&mut self, _: &InstanceRecord) -> Result<(), StoreError> {
        Err(StoreError::Sqlite {
            path: "test".into(),
            source: rusqlite::Error::InvalidQuery,
        })
    }
    fn touch(&mut self, _: &InstanceId, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove(&mut self, _: &[InstanceId]) -> Result<(), StoreError> {
        Ok(())
    }
    fn drained(&mut self) -> Result<Vec<InstanceId>, StoreError> {
        Ok(Vec::new())
    }
    fn set_drained(&mut self, _: &InstanceId, _: bool) -> Result<(), StoreError> {
        Err(StoreError::Sqlite {
            path: "test".into(),
            source: rusqlite::Error::InvalidQuery,
        })
    }
    fn secret(&mut self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn put_secret(&mut self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn app_policies(&mut self) -> Result<Vec<crate::registry::StoredPolicy>, StoreError> {
        Ok(Vec::new())
    }
    fn put_app_policy(&mut self, _: &crate::registry::StoredPolicy) -> Result<(), StoreError> {
        Err(StoreError::Sqlite {
            path: "test".into(),
            source: rusqlite::Error::InvalidQuery,
        })
    }
}

#[test]
fn a_failed_write_changes_nothing_in_memory() {
    let mut r = Registry::open(Box::new(FailingStore), net(), GW, DAY).unwrap();
    let e = admit(&mut r, APP, "11111111", 1, 1).unwrap_err();
    assert_eq!(e.to_body().error, ErrorCode::Internal);
    assert!(r.is_empty());
    assert!(r.by_key(&key(1)).is_none());
}

struct Ages;

impl HandshakeAges for Ages {
    fn since_handshake(&self, key: &PublicKey) -> Option<Duration> {
        (key == &self::key(1)).then(|| Duration::from_secs(7))
    }
}

#[test]
fn directory_resolves_apps_then_instances_and_follows_changes() {
    use crate::proxy::directory::{InstanceDirectory, LookupError};
    let mut r = Registry::open(
        Box::new(MemoryStore::new()),
        net(),
        GW,
        Duration::from_secs(100),
    )
    .unwrap();
    let dir = RegistryDirectory::new(r.snapshots(), std::sync::Arc::new(Ages));
    assert!(matches!(
        dir.resolve(APP, 80),
        Err(LookupError::UnknownId(_))
    ));
    let one = admit(&mut r, APP, "11111111", 1, 1000).unwrap().record;
    admit(&mut r, APP, "22222222", 2, 1000).unwrap();

    let res = dir.resolve(&APP.to_uppercase(), 80).unwrap();
    assert_eq!(res.app_id, APP);
    assert_eq!(res.candidates.len(), 2);
    let c1 = res
        .candidates
        .iter()
        .find(|c| c.instance_id == "11111111")
        .unwrap();
    assert_eq!(c1.addr, SocketAddr::new(IpAddr::V4(one.tunnel_address), 80));
    assert_eq!(c1.since_handshake, Some(Duration::from_secs(7)));
    assert!(!c1.proxy_protocol);
    // Port 443 is declared but its target is reported down everywhere: no candidate, yet not "not exposed".
    assert!(dir.resolve(APP, 443).unwrap().candidates.is_empty());
    assert!(matches!(
        dir.resolve(APP, 9999),
        Err(LookupError::PortNotExposed { .. })
    ));
    let by_instance = dir.resolve("22222222", 80).unwrap();
    assert_eq!(
        (by_instance.app_id.as_str(), by_instance.candidates.len()),
        (APP, 1)
    );

    let mut up = request(APP, "22222222", 2);
    up.ports[1].target_state = Some(TargetState::Up);
    r.register(&up, &admitted(), 1001).unwrap();
    let res = dir.resolve(APP, 443).unwrap();
    assert_eq!(res.candidates.len(), 1);
    assert!(res.candidates[0].proxy_protocol);

    r.expire(1101).unwrap();
    assert_eq!(dir.resolve(APP, 80).unwrap().candidates.len(), 1);
    assert_eq!(dir.instances().len(), 1);
}

#[test]
fn secrets_survive_reopening() {
    let dir = TempDir::new();
    {
        let mut s = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(s.secret("wireguard").unwrap(), None);
        s.put_secret("wireguard", &[1, 2, 3]).unwrap();
        s.put_secret("wireguard", &[4, 5, 6]).unwrap();
    }
    let mut s = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(s.secret("wireguard").unwrap(), Some(vec![4, 5, 6]));
}

#[test]
fn drain_state_survives_reopening_re_registration_and_goes_with_expiry() {
    use crate::proxy::limits::DrainStore;
    let dir = TempDir::new();
    let (one, two): (InstanceId, InstanceId) =
        ("11111111".parse().unwrap(), "22222222".parse().unwrap());
    {
        let mut r = open(&dir.db());
        admit(&mut r, APP, "11111111", 1, 1000).unwrap();
        admit(&mut r, APP, "22222222", 2, 1000).unwrap();
        assert!(r.drained().unwrap().is_empty());
        assert!(r.set_drained(&one, true).unwrap());
        assert!(r.set_drained(&two, true).unwrap());
        assert!(r.set_drained(&two, false).unwrap());
        assert!(
            !r.set_drained(&"33333333".parse().unwrap(), true).unwrap(),
            "an unknown instance is not stored"
        );
    }
    // A restarted gateway finds the drain; registering again (new ports, new key) keeps it.
    let mut r = open_expiring(&dir.db(), Duration::from_secs(100));
    assert_eq!(r.drained().unwrap(), vec![one.clone()]);
    admit(&mut r, APP, "11111111", 9, 1050).unwrap();
    admit(&mut r, APP, "22222222", 2, 1090).unwrap();
    assert_eq!(r.drained().unwrap(), vec![one.clone()]);

    // Through the proxy's storage seam, on the same registry.
    let shared = Arc::new(std::sync::Mutex::new(r));
    let drains = RegistryDrains::new(shared.clone());
    assert_eq!(drains.load().unwrap(), vec!["11111111".to_owned()]);
    drains.save("22222222", true).unwrap();
    let err = drains.save("33333333", true).unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
    assert!(drains.save("not-an-id", true).is_err());
    drains.save("33333333", false).unwrap();
    assert_eq!(
        drains.load().unwrap(),
        vec!["11111111".to_owned(), "22222222".to_owned()]
    );

    // Expiry removes the instance and its drain: a later instance with the same id starts undrained.
    let mut r = shared.lock().unwrap();
    assert_eq!(r.expire(1151).unwrap().len(), 1);
    assert_eq!(r.drained().unwrap(), vec![two.clone()]);
    admit(&mut r, APP, "11111111", 1, 1160).unwrap();
    assert_eq!(r.drained().unwrap(), vec![two]);
}

#[test]
fn a_version_3_database_gains_the_drain_column_undrained() {
    let dir = TempDir::new();
    {
        let mut r = open(&dir.db());
        admit(&mut r, APP, "11111111", 1, 1000).unwrap();
    }
    {
        // Back to version 3: what a gateway before the drain column left behind.
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "ALTER TABLE instances DROP COLUMN claims; ALTER TABLE instances DROP COLUMN valid_until;
             ALTER TABLE instances DROP COLUMN drained; DROP TABLE app_policies; PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let mut r = open(&dir.db());
    assert_eq!(r.len(), 1);
    assert!(r.drained().unwrap().is_empty());
    assert!(r.set_drained(&"11111111".parse().unwrap(), true).unwrap());
    drop(r);
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.drained().unwrap().len(), 1);
}

#[test]
fn claims_and_their_end_survive_reopening_and_older_rows_get_an_hour() {
    let dir = TempDir::new();
    {
        let mut r = open(&dir.db());
        r.register(
            &request(APP, "11111111", 1),
            &super::record::fixtures::admission(7, 5000),
            1000,
        )
        .unwrap();
    }
    let r = open(&dir.db());
    let rec = r.get(&"11111111".parse().unwrap()).unwrap();
    assert_eq!(rec.valid_until, 5000);
    assert_eq!(rec.claims, Some(test_support::claims::sim_snp(7)));
    drop(r);
    {
        // Back to version 4: rows written before claims were kept.
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "ALTER TABLE instances DROP COLUMN claims; ALTER TABLE instances DROP COLUMN valid_until;
             DROP TABLE app_policies; PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let mut r = open(&dir.db());
    let rec = r.get(&"11111111".parse().unwrap()).unwrap();
    assert_eq!((rec.claims.as_ref(), rec.valid_until), (None, 1000 + 3600));
    // Such a row passes no re-check: the removal takes it, durably.
    let removed = r
        .remove_where(|r| r.claims.is_none().then_some("no claims"))
        .unwrap();
    assert_eq!(removed.len(), 1);
    drop(r);
    assert!(open(&dir.db()).is_empty());
}

#[test]
fn the_instance_quota_refuses_only_new_instances_of_a_full_app() {
    let dir = TempDir::new();
    let mut r = open(&dir.db());
    assert_eq!(r.max_instances_per_app, DEFAULT_MAX_INSTANCES_PER_APP);
    r.set_max_instances_per_app(2);
    admit(&mut r, APP, "11111111", 1, 1).unwrap();
    admit(&mut r, APP, "22222222", 2, 1).unwrap();
    let refused = admit(&mut r, APP, "33333333", 3, 2).unwrap_err();
    assert!(
        matches!(&refused, RegisterError::QuotaExceeded { max: 2, .. }),
        "{refused}"
    );
    let body = refused.to_body();
    assert_eq!(body.error, ErrorCode::InstanceQuotaExceeded);
    assert_eq!(body.http_status(), 403);
    assert!(body.message.contains(APP), "{}", body.message);
    // Nothing changed: no record, no address, the key is free.
    assert_eq!(r.len(), 2);
    assert!(r.by_key(&key(3)).is_none());
    // Known instances re-register at the quota: refreshed, with a new key, and again after a reopen.
    assert_eq!(
        admit(&mut r, APP, "11111111", 1, 3).unwrap().change,
        Change::Refreshed
    );
    assert_eq!(
        admit(&mut r, APP, "22222222", 9, 3).unwrap().change,
        Change::KeyChanged { old_key: key(2) }
    );
    // Another app has its own quota.
    admit(&mut r, OTHER_APP, "44444444", 4, 3).unwrap();
    drop(r);
    let mut r = open(&dir.db());
    r.set_max_instances_per_app(2);
    admit(&mut r, APP, "11111111", 1, 4).unwrap();
    assert!(matches!(
        admit(&mut r, APP, "33333333", 3, 4),
        Err(RegisterError::QuotaExceeded { .. })
    ));
    // A lower quota than the instances stored keeps them and their re-registrations.
    r.set_max_instances_per_app(1);
    admit(&mut r, APP, "22222222", 9, 5).unwrap();
    assert_eq!(r.len(), 3);
    // Below the quota again (an instance expired), a new one is admitted.
    r.set_max_instances_per_app(3);
    admit(&mut r, APP, "33333333", 3, 6).unwrap();
}
