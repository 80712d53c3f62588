//! The registry in SQLite: one database file, schema migrations, durable writes.
//!
//! The database runs in WAL mode with `synchronous = FULL`, so a write is on disk when its transaction commits;
//! the registry commits before the gateway answers a registration. Migrations are numbered SQL scripts applied in
//! order inside one transaction each; `PRAGMA user_version` records the last one applied.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use protocol::control::{InstanceId, PortPolicy, TargetState};
use rusqlite::{params, Connection, OptionalExtension};

use super::app_policies::StoredPolicy;
use super::record::InstanceRecord;
use super::store::{RegistryStore, StoreError};

/// The schema migrations, in order. Index `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: instances, their keys and addresses, their ports.
    r#"
    CREATE TABLE instances (
        instance_id    TEXT PRIMARY KEY NOT NULL,
        app_id         TEXT NOT NULL,
        public_key     BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
        tunnel_address INTEGER NOT NULL UNIQUE,
        attestation    TEXT NOT NULL DEFAULT '',
        registered_at  INTEGER NOT NULL,
        last_seen      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX instances_app ON instances (app_id);
    CREATE INDEX instances_last_seen ON instances (last_seen);
    CREATE TABLE ports (
        instance_id    TEXT NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
        port           INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        proxy_protocol INTEGER NOT NULL,
        PRIMARY KEY (instance_id, port)
    ) STRICT;
    "#,
    // 2: the per-port state of the agent's local target (up/down), unknown for rows written before.
    r#"
    ALTER TABLE ports ADD COLUMN target_state TEXT CHECK (target_state IN ('up', 'down'));
    "#,
    // 3: the gateway's own long-lived secrets (its WireGuard private key), so agents keep their tunnels across
    // gateway restarts.
    r#"
    CREATE TABLE secrets (
        name  TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    ) STRICT;
    "#,
    // 4: whether an operator drained the instance (no new client connections), kept across gateway restarts.
    r#"
    ALTER TABLE instances ADD COLUMN drained INTEGER NOT NULL DEFAULT 0 CHECK (drained IN (0, 1));
    "#,
    // 5: the verified claims an instance registered with (JSON) and when its evidence ends, so that a changed
    // policy or evidence that was not renewed removes it. Rows written before have no claims (they pass no
    // re-check) and get one hour of validity from their last registration, the default RA-TLS certificate lifetime.
    r#"
    ALTER TABLE instances ADD COLUMN claims TEXT;
    ALTER TABLE instances ADD COLUMN valid_until INTEGER NOT NULL DEFAULT 0;
    UPDATE instances SET valid_until = last_seen + 3600;
    "#,
    // 6: the app owners' signed policies, the highest version seen per app.
    super::app_policies::MIGRATION,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQLite implementation of [`RegistryStore`].
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| sqlite_err(path, source))?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        sqlite_err(&self.path, source)
    }

    /// A stored value of `instance` that cannot be decoded (or encoded), and why.
    fn corrupt(&self, instance: String, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            instance,
            what,
        }
    }

    /// Runs one statement that returns no rows.
    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
        self.conn
            .execute(sql, params)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Runs a query and collects its rows, each as a tuple of its columns.
    fn query_tuples<T>(&self, sql: &str) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> TryFrom<&'r rusqlite::Row<'r>, Error = rusqlite::Error>,
    {
        self.query_all(sql, |r| T::try_from(r))
    }

    /// Runs a query and collects every row `row` makes.
    fn query_all<T>(
        &self,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], row).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 5000;",
            )
            .map_err(|e| self.err(e))
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: self.path.display().to_string(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (index, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(found).unwrap_or(0))
        {
            let version = index as i64 + 1;
            let path = self.path.clone();
            let tx = self.conn.transaction().map_err(|e| sqlite_err(&path, e))?;
            tx.execute_batch(sql).map_err(|e| sqlite_err(&path, e))?;
            tx.pragma_update(None, "user_version", version)
                .map_err(|e| sqlite_err(&path, e))?;
            tx.commit().map_err(|e| sqlite_err(&path, e))?;
            tracing::info!(path = %path.display(), version, "registry schema migrated");
        }
        Ok(())
    }

    fn decode(&self, row: RawRow, ports: Vec<PortPolicy>) -> Result<InstanceRecord, StoreError> {
        let corrupt = |what: String| self.corrupt(row.instance_id.clone(), what);
        Ok(InstanceRecord {
            instance_id: row
                .instance_id
                .parse()
                .map_err(|e| corrupt(format!("instance id: {e}")))?,
            app_id: row
                .app_id
                .parse()
                .map_err(|e| corrupt(format!("app id: {e}")))?,
            public_key: protocol::control::PublicKey::from_slice(&row.public_key)
                .map_err(|e| corrupt(e.to_string()))?,
            tunnel_address: Ipv4Addr::from(
                u32::try_from(row.tunnel_address)
                    .map_err(|_| corrupt("tunnel address out of range".into()))?,
            ),
            ports,
            attestation: row.attestation,
            claims: row
                .claims
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| corrupt(format!("claims: {e}")))?,
            valid_until: u64::try_from(row.valid_until).unwrap_or(0),
            registered_at: u64::try_from(row.registered_at).unwrap_or(0),
            last_seen: u64::try_from(row.last_seen).unwrap_or(0),
        })
    }
}

struct RawRow {
    instance_id: String,
    app_id: String,
    public_key: Vec<u8>,
    tunnel_address: i64,
    attestation: String,
    claims: Option<String>,
    valid_until: i64,
    registered_at: i64,
    last_seen: i64,
}

fn sqlite_err(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

fn state_to_sql(s: Option<TargetState>) -> Option<&'static str> {
    s.map(|s| match s {
        TargetState::Up => "up",
        TargetState::Down => "down",
    })
}

fn state_from_sql(s: Option<String>) -> Option<TargetState> {
    match s.as_deref() {
        Some("up") => Some(TargetState::Up),
        Some("down") => Some(TargetState::Down),
        _ => None,
    }
}

impl RegistryStore for SqliteStore {
    fn load_all(&mut self) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut ports: std::collections::HashMap<String, Vec<PortPolicy>> =
            std::collections::HashMap::new();
        let rows: Vec<(String, i64, i64, Option<String>)> = self.query_tuples(
            "SELECT instance_id, port, proxy_protocol, target_state FROM ports ORDER BY instance_id, port",
        )?;
        for (id, port, proxy, state) in rows {
            let port = u16::try_from(port)
                .map_err(|_| self.corrupt(id.clone(), format!("port {port} out of range")))?;
            ports.entry(id).or_default().push(PortPolicy {
                port,
                proxy_protocol: proxy != 0,
                target_state: state_from_sql(state),
            });
        }
        let raws = self.query_all(
            "SELECT instance_id, app_id, public_key, tunnel_address, attestation, registered_at, last_seen, claims,
             valid_until FROM instances ORDER BY instance_id",
            |r| {
                Ok(RawRow {
                    instance_id: r.get(0)?,
                    app_id: r.get(1)?,
                    public_key: r.get(2)?,
                    tunnel_address: r.get(3)?,
                    attestation: r.get(4)?,
                    registered_at: r.get(5)?,
                    last_seen: r.get(6)?,
                    claims: r.get(7)?,
                    valid_until: r.get(8)?,
                })
            },
        )?;
        raws.into_iter()
            .map(|raw| {
                let p = ports.remove(&raw.instance_id).unwrap_or_default();
                self.decode(raw, p)
            })
            .collect()
    }

    fn upsert(&mut self, record: &InstanceRecord) -> Result<(), StoreError> {
        let claims = record
            .claims
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| {
                self.corrupt(
                    record.instance_id.to_string(),
                    format!("claims cannot be encoded: {e}"),
                )
            })?;
        let path = self.path.clone();
        let e = |source| sqlite_err(&path, source);
        let tx = self.conn.transaction().map_err(e)?;
        // A known instance keeps its registration time; its ports are replaced.
        tx.execute(
            "INSERT INTO instances (instance_id, app_id, public_key, tunnel_address, attestation, registered_at,
             last_seen, claims, valid_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (instance_id) DO UPDATE SET app_id = excluded.app_id, public_key = excluded.public_key,
             tunnel_address = excluded.tunnel_address, attestation = excluded.attestation,
             last_seen = excluded.last_seen, claims = excluded.claims, valid_until = excluded.valid_until",
            params![
                record.instance_id.as_str(),
                record.app_id.as_str(),
                record.public_key.as_bytes().as_slice(),
                i64::from(u32::from(record.tunnel_address)),
                record.attestation,
                record.registered_at as i64,
                record.last_seen as i64,
                claims,
                i64::try_from(record.valid_until).unwrap_or(i64::MAX),
            ],
        )
        .map_err(e)?;
        tx.execute(
            "DELETE FROM ports WHERE instance_id = ?1",
            [record.instance_id.as_str()],
        )
        .map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO ports (instance_id, port, proxy_protocol, target_state) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(e)?;
            for p in &record.ports {
                stmt.execute(params![
                    record.instance_id.as_str(),
                    i64::from(p.port),
                    i64::from(p.proxy_protocol),
                    state_to_sql(p.target_state),
                ])
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    fn touch(&mut self, instance_id: &InstanceId, last_seen: u64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE instances SET last_seen = ?2 WHERE instance_id = ?1",
            params![instance_id.as_str(), last_seen as i64],
        )
    }

    fn secret(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    fn put_secret(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            params![name, value],
        )
    }

    fn drained(&mut self) -> Result<Vec<InstanceId>, StoreError> {
        let ids = self.query_all(
            "SELECT instance_id FROM instances WHERE drained = 1 ORDER BY instance_id",
            |r| r.get::<_, String>(0),
        )?;
        ids.into_iter()
            .map(|id| {
                id.parse()
                    .map_err(|e| self.corrupt(id.clone(), format!("instance id: {e}")))
            })
            .collect()
    }

    fn set_drained(&mut self, instance_id: &InstanceId, drained: bool) -> Result<(), StoreError> {
        self.execute(
            "UPDATE instances SET drained = ?2 WHERE instance_id = ?1",
            params![instance_id.as_str(), i64::from(drained)],
        )
    }

    fn app_policies(&mut self) -> Result<Vec<StoredPolicy>, StoreError> {
        let rows: Vec<(String, i64, String, i64)> =
            self.query_tuples("SELECT app_id, version, document, stored_at FROM app_policies")?;
        Ok(rows
            .into_iter()
            .map(|(app_id, version, document, stored_at)| StoredPolicy {
                app_id,
                version: u64::try_from(version).unwrap_or(0),
                document,
                stored_at: u64::try_from(stored_at).unwrap_or(0),
            })
            .collect())
    }

    fn put_app_policy(&mut self, policy: &StoredPolicy) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO app_policies (app_id, version, document, stored_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (app_id) DO UPDATE SET version = excluded.version, document = excluded.document,
             stored_at = excluded.stored_at",
            params![
                policy.app_id,
                i64::try_from(policy.version).unwrap_or(i64::MAX),
                policy.document,
                i64::try_from(policy.stored_at).unwrap_or(i64::MAX)
            ],
        )
    }

    fn remove(&mut self, instance_ids: &[InstanceId]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| sqlite_err(&path, source);
        let tx = self.conn.transaction().map_err(e)?;
        for id in instance_ids {
            tx.execute(
                "DELETE FROM instances WHERE instance_id = ?1",
                [id.as_str()],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }
}
