//! The app's policy, as its owner signed it, that the agent carries in every registration.
//!
//! The file (`app_policy` in `agent.toml`) is read and checked at boot: it must be signed by the key the app id
//! derives from, so a wrong file stops the agent there. Afterwards [`AppPolicyFile::current`] re-reads it when its
//! modification time or length changed, so an owner who installs a new version (a CVM's configuration volume, a
//! secret mounted from the owner's store) has it carried from the next registration on, without a restart. A
//! changed file that no longer verifies is logged and the last good one kept: a registration never carries a
//! policy the gateway would refuse because of a half-written file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use attestation::owner::{OwnerError, SignedPolicy};
use protocol::control::AppId;

/// The signed app policy file and the last good document read from it.
#[derive(Debug)]
pub struct AppPolicyFile {
    path: PathBuf,
    app_id: AppId,
    loaded: Mutex<Loaded>,
}

/// A verified document and the file state it was read at.
#[derive(Debug, Clone)]
struct Loaded {
    text: String,
    version: u64,
    stamp: Option<(SystemTime, u64)>,
}

/// The file's modification time and length, or none when it cannot be read.
fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads and verifies the document at `path` for `app_id`: its text and version.
fn read_verified(path: &Path, app_id: &AppId) -> Result<(String, u64), OwnerError> {
    let text = std::fs::read_to_string(path).map_err(|source| OwnerError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let verified = SignedPolicy::from_json(&text)?.verify_for(app_id.as_str())?;
    Ok((text, verified.version()))
}

impl AppPolicyFile {
    /// Reads and verifies the file: it must hold a policy for `app_id` signed by the key that id derives from.
    pub fn load(path: &Path, app_id: &AppId) -> Result<Self, OwnerError> {
        let stamp = stamp_of(path);
        let (text, version) = read_verified(path, app_id)?;
        tracing::info!(path = %path.display(), version, "app policy signed by the app's owner");
        Ok(AppPolicyFile {
            path: path.to_path_buf(),
            app_id: app_id.clone(),
            loaded: Mutex::new(Loaded {
                text,
                version,
                stamp,
            }),
        })
    }

    /// The document to carry: re-read first if the file changed; the last good one if the change does not
    /// verify (logged once per change).
    pub fn current(&self) -> String {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = stamp_of(&self.path);
        if stamp == loaded.stamp {
            return loaded.text.clone();
        }
        match read_verified(&self.path, &self.app_id) {
            Ok((text, version)) => {
                tracing::info!(path = %self.path.display(), version, previous = loaded.version,
                    "app policy file changed; carrying the new document from now on");
                *loaded = Loaded {
                    text,
                    version,
                    stamp,
                };
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, kept = loaded.version,
                    "the changed app policy file is refused; carrying the last good document");
                loaded.stamp = stamp;
            }
        }
        loaded.text.clone()
    }

    /// The version of the document [`Self::current`] last returned.
    pub fn version(&self) -> u64 {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .version
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use attestation::owner::OwnerKey;

    use super::*;

    fn signed(key: &OwnerKey, version: u64) -> String {
        let profiles =
            attestation::owner::ProfilesFile::from_toml(&test_support::configs::app_profiles(&[
                "aa",
            ]))
            .unwrap();
        SignedPolicy::sign(key, version, profiles.profile)
            .unwrap()
            .to_json()
    }

    /// Writes `text` so that the file's stamp surely changes (another length or a later time).
    fn rewrite(path: &Path, text: &str) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_new_version_is_carried_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app-policy.json");
        let key = OwnerKey::from_seed([7; 32]);
        let app: AppId = key.app_id().parse().unwrap();
        std::fs::write(&path, signed(&key, 1)).unwrap();
        let file = AppPolicyFile::load(&path, &app).unwrap();
        assert_eq!(file.current(), signed(&key, 1));

        rewrite(&path, &signed(&key, 22));
        assert_eq!(file.current(), signed(&key, 22));
        assert_eq!(file.version(), 22);

        // Half-written, then signed by another key: the last good document stays.
        rewrite(&path, "{\"policy\":");
        assert_eq!(file.current(), signed(&key, 22));
        rewrite(&path, &signed(&OwnerKey::from_seed([8; 32]), 23));
        assert_eq!(file.current(), signed(&key, 22));
        assert_eq!(file.version(), 22);
    }

    #[test]
    fn a_file_for_another_app_stops_the_agent_at_boot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app-policy.json");
        let app: AppId = OwnerKey::from_seed([7; 32]).app_id().parse().unwrap();
        std::fs::write(&path, signed(&OwnerKey::from_seed([8; 32]), 1)).unwrap();
        assert!(AppPolicyFile::load(&path, &app).is_err());
        assert!(AppPolicyFile::load(&dir.path().join("missing.json"), &app).is_err());
    }
}
