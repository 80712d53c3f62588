//! The app owners' signed policies: the highest version seen per app, kept in the registry's database.
//!
//! A policy arrives with a registration (the app's agents carry it) or through the admin API (its owner uploads
//! it); [`Registry::offer_policy`] verifies it ([`attestation::owner`]: the signature, and that the signing key
//! derives the app id) and keeps it only when its version is higher than the stored one. A lower version, or the
//! same version with the same content, changes nothing (an old policy replayed by a stale agent cannot roll the
//! app back); the same version with other content is refused. The stored document is written before it takes
//! effect, and it is verified again whenever the registry is opened.
//!
//! The database lives on the host's disk: a host that rewrites it cannot forge a policy, but can make the gateway
//! forget the newest one until an agent or the owner brings it again.

use std::collections::HashMap;
use std::sync::Arc;

use attestation::owner::{OwnerError, SignedPolicy, VerifiedPolicy};

use super::store::{RegistryStore, StoreError};
use super::Registry;

/// Migration of the registry schema that adds the policies' table.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE app_policies (
        app_id    TEXT PRIMARY KEY NOT NULL,
        version   INTEGER NOT NULL CHECK (version >= 0),
        document  TEXT NOT NULL,
        stored_at INTEGER NOT NULL
    ) STRICT;
"#;

/// One stored policy: the app, its version and the signed document's JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The app id.
    pub app_id: String,
    /// The policy's version.
    pub version: u64,
    /// The signed document, JSON.
    pub document: String,
    /// When it was stored, seconds since the Unix epoch.
    pub stored_at: u64,
}

/// What offering a signed policy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOffer {
    /// The policy is now the app's, replacing `previous` (none before).
    Installed {
        /// The app.
        app_id: String,
        /// Its version.
        version: u64,
        /// The version it replaced.
        previous: Option<u64>,
    },
    /// The stored policy is as new or newer: nothing changed.
    Kept {
        /// The app.
        app_id: String,
        /// The version offered.
        offered: u64,
        /// The version in force.
        stored: u64,
    },
}

impl PolicyOffer {
    /// The version in force after the offer.
    pub fn version_in_force(&self) -> u64 {
        match self {
            Self::Installed { version, .. } => *version,
            Self::Kept { stored, .. } => *stored,
        }
    }
}

/// Why an offered policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyOfferError {
    /// The document does not verify, or is for another app.
    #[error(transparent)]
    Invalid(#[from] OwnerError),
    /// The same version with other content is in force: an owner never signs two policies with one version.
    #[error(
        "app {app_id} already has a policy version {version} with other profiles; sign the new policy with a \
         higher version"
    )]
    ConflictingVersion {
        /// The app.
        app_id: String,
        /// The version.
        version: u64,
    },
    /// The version does not fit the database (above 2^63 - 1).
    #[error("policy version {0} is too large (at most 9223372036854775807)")]
    VersionTooLarge(u64),
    /// The store failed; nothing changed.
    #[error("storing the app policy failed: {0}")]
    Store(#[from] StoreError),
}

impl PolicyOfferError {
    /// A stable label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.kind(),
            Self::ConflictingVersion { .. } => "conflicting_version",
            Self::VersionTooLarge(_) => "version_too_large",
            Self::Store(_) => "store",
        }
    }
}

/// The verified policies of every stored row; a row that no longer verifies is left out, with an error logged.
pub(super) fn load(
    store: &mut dyn RegistryStore,
) -> Result<HashMap<String, Arc<VerifiedPolicy>>, StoreError> {
    let mut policies = HashMap::new();
    for row in store.app_policies()? {
        let verified =
            SignedPolicy::from_json(&row.document).and_then(|d| d.verify_for(&row.app_id));
        match verified {
            Ok(p) if p.version() == row.version => {
                policies.insert(row.app_id, Arc::new(p));
            }
            Ok(p) => tracing::error!(app = %row.app_id, stored = row.version, signed = p.version(),
                "stored app policy's version column differs from its signed version; ignored"),
            Err(e) => tracing::error!(app = %row.app_id, error = %e,
                "stored app policy does not verify; ignored"),
        }
    }
    Ok(policies)
}

impl Registry {
    /// The owner-signed policy in force for `app_id`, if any.
    pub fn owner_policy(&self, app_id: &str) -> Option<Arc<VerifiedPolicy>> {
        self.owner_policies.get(app_id).cloned()
    }

    /// Every app's owner-signed policy in force.
    pub fn owner_policies(&self) -> HashMap<String, Arc<VerifiedPolicy>> {
        self.owner_policies.clone()
    }

    /// Verifies `signed` (for `for_app` when given) and installs it if its version is higher than the one in
    /// force; see the module documentation. On error nothing changed.
    pub fn offer_policy(
        &mut self,
        signed: &SignedPolicy,
        for_app: Option<&str>,
        now: u64,
    ) -> Result<PolicyOffer, PolicyOfferError> {
        let verified = match for_app {
            Some(app) => signed.verify_for(app)?,
            None => signed.verify()?,
        };
        let (app_id, version) = (verified.app_id().to_owned(), verified.version());
        if i64::try_from(version).is_err() {
            return Err(PolicyOfferError::VersionTooLarge(version));
        }
        let previous = self.owner_policies.get(&app_id).map(|p| p.version());
        if let Some(current) = self.owner_policies.get(&app_id) {
            if version < current.version()
                || (version == current.version() && verified.same_content(current))
            {
                return Ok(PolicyOffer::Kept {
                    app_id,
                    offered: version,
                    stored: current.version(),
                });
            }
            if version == current.version() {
                return Err(PolicyOfferError::ConflictingVersion { app_id, version });
            }
        }
        self.store.put_app_policy(&StoredPolicy {
            app_id: app_id.clone(),
            version,
            document: signed.to_json(),
            stored_at: now,
        })?;
        self.owner_policies
            .insert(app_id.clone(), Arc::new(verified));
        Ok(PolicyOffer::Installed {
            app_id,
            version,
            previous,
        })
    }
}

/// Owner keys and their signed policies for the gateway's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use attestation::owner::{OwnerKey, ProfilesFile, SignedPolicy};

    /// The owner key made from seed `[n; 32]`.
    pub(crate) fn owner(n: u8) -> OwnerKey {
        OwnerKey::from_seed([n; 32])
    }

    /// A policy of `key`'s app at `version` accepting simulated SNP measurement `[measurement; 48]`.
    pub(crate) fn signed(key: &OwnerKey, version: u64, measurement: u8) -> SignedPolicy {
        let text = format!(
            "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\nmin_tcb = {{ bootloader = 0 }}\n",
            hex::encode([measurement; 48])
        );
        SignedPolicy::sign(
            key,
            version,
            ProfilesFile::from_toml(&text).unwrap().profile,
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fixtures::{owner as key, signed};
    use super::*;
    use crate::registry::{MemoryStore, SqliteStore};

    fn open(store: Box<dyn RegistryStore>) -> Registry {
        Registry::open(
            store,
            "10.0.0.0/8".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            Duration::from_secs(100),
        )
        .unwrap()
    }

    /// A registry in memory, and the app of owner key 1.
    fn in_memory() -> (Registry, String) {
        (open(Box::new(MemoryStore::new())), key(1).app_id())
    }

    /// Offers, at `now`, the policy key `signer` signs at `version` accepting measurement `m`, checked against
    /// `app` when given.
    fn offer(
        r: &mut Registry,
        (signer, version, m): (u8, u64, u8),
        app: Option<&str>,
        now: u64,
    ) -> Result<PolicyOffer, PolicyOfferError> {
        r.offer_policy(&signed(&key(signer), version, m), app, now)
    }

    #[test]
    fn the_highest_version_is_kept_and_an_older_one_changes_nothing() {
        let (mut r, app) = in_memory();
        let v2 = offer(&mut r, (1, 2, 7), Some(&app), 1).unwrap();
        assert_eq!(
            v2,
            PolicyOffer::Installed {
                app_id: app.clone(),
                version: 2,
                previous: None
            }
        );
        // An old policy, validly signed, replayed: kept out.
        let v1 = offer(&mut r, (1, 1, 9), Some(&app), 2).unwrap();
        assert_eq!(
            v1,
            PolicyOffer::Kept {
                app_id: app.clone(),
                offered: 1,
                stored: 2
            }
        );
        assert_eq!(r.owner_policy(&app).unwrap().version(), 2);
        // The same policy again: nothing changes.
        let same = offer(&mut r, (1, 2, 7), None, 3).unwrap();
        assert!(matches!(same, PolicyOffer::Kept { stored: 2, .. }));
        // The same version with other profiles: refused.
        let other = offer(&mut r, (1, 2, 8), None, 3).unwrap_err();
        assert!(
            matches!(
                other,
                PolicyOfferError::ConflictingVersion { version: 2, .. }
            ),
            "{other}"
        );
        // A newer one replaces it.
        let v3 = offer(&mut r, (1, 3, 8), None, 4).unwrap();
        assert_eq!(v3.version_in_force(), 3);
        assert!(matches!(
            v3,
            PolicyOffer::Installed {
                previous: Some(2),
                ..
            }
        ));
    }

    #[test]
    fn a_policy_of_another_key_or_app_is_refused() {
        let (mut r, app) = in_memory();
        let e = offer(&mut r, (2, 5, 7), Some(&app), 1).unwrap_err();
        assert!(
            matches!(e, PolicyOfferError::Invalid(OwnerError::OtherApp { .. })),
            "{e}"
        );
        let mut forged = signed(&key(1), 5, 7);
        forged.policy = forged.policy.replace("\"version\":5", "\"version\":6");
        let e = r.offer_policy(&forged, Some(&app), 1).unwrap_err();
        assert!(
            matches!(e, PolicyOfferError::Invalid(OwnerError::BadSignature)),
            "{e}"
        );
        assert!(r.owner_policy(&app).is_none());
    }

    #[test]
    fn policies_survive_a_restart_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let app = key(1).app_id();
        {
            let mut r = open(Box::new(SqliteStore::open(&path).unwrap()));
            offer(&mut r, (1, 4, 7), None, 1).unwrap();
        }
        let mut r = open(Box::new(SqliteStore::open(&path).unwrap()));
        assert_eq!(r.owner_policy(&app).unwrap().version(), 4);
        let replay = offer(&mut r, (1, 3, 9), None, 2).unwrap();
        assert!(matches!(replay, PolicyOffer::Kept { stored: 4, .. }));
        offer(&mut r, (1, 5, 9), None, 3).unwrap();
        drop(r);
        let r = open(Box::new(SqliteStore::open(&path).unwrap()));
        assert_eq!(r.owner_policy(&app).unwrap().version(), 5);
    }
}
