//! Policy files that can be re-read while the program runs: on demand ([`PolicyFile::reload`]) or when the file's
//! modification time changed ([`PolicyFile::reload_if_changed`], meant to be called periodically).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::de::DeserializeOwned;

use crate::reload::{self, ChangeWatch};

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("reading policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("parsing policy {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        source: toml::de::Error,
    },
}

/// A policy loaded from a file, replaced atomically by [`PolicyFile::reload`].
///
/// Readers take an `Arc` snapshot with [`PolicyFile::current`]; a failed reload keeps the previous policy.
#[derive(Debug)]
pub struct PolicyFile<P> {
    path: PathBuf,
    current: RwLock<Arc<P>>,
    watch: Mutex<ChangeWatch>,
}

/// What [`PolicyFile::reload_if_changed`] did.
#[derive(Debug)]
pub enum Reload {
    /// The file's modification time is the one seen before: nothing was read.
    Unchanged,
    /// The file changed and its new policy is in force.
    Reloaded,
    /// The file changed but could not be loaded: the previous policy stays in force.
    Failed(PolicyLoadError),
}

impl<P: DeserializeOwned> PolicyFile<P> {
    /// Load the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolicyLoadError> {
        let path = path.as_ref().to_path_buf();
        // The time is read before the contents, so that a change while reading is seen by the next check.
        let seen = reload::modified(&path);
        let policy = read_policy(&path)?;
        Ok(PolicyFile {
            path,
            current: RwLock::new(Arc::new(policy)),
            watch: Mutex::new(ChangeWatch::new(seen)),
        })
    }

    /// Re-read the file; on error the previous policy stays in force and the error is returned.
    pub fn reload(&self) -> Result<(), PolicyLoadError> {
        let policy = Arc::new(read_policy(&self.path)?);
        match self.current.write() {
            Ok(mut g) => *g = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
        tracing::info!(path = %self.path.display(), "policy reloaded");
        Ok(())
    }

    /// Re-read the file if its modification time changed since it was last seen; on error the previous policy
    /// stays in force (and the file is read again only after its next change).
    pub fn reload_if_changed(&self) -> Reload {
        let observed = reload::modified(&self.path);
        let changed = match self.watch.lock() {
            Ok(mut watch) => watch.observe(observed),
            Err(poisoned) => poisoned.into_inner().observe(observed),
        };
        if !changed {
            return Reload::Unchanged;
        }
        match self.reload() {
            Ok(()) => Reload::Reloaded,
            Err(e) => Reload::Failed(e),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<P> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read and parse a policy file once (what `check-config` does to refuse a policy that `run` would refuse).
pub fn read_policy<P: DeserializeOwned>(path: &Path) -> Result<P, PolicyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| PolicyLoadError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Limit {
        max: u32,
    }

    /// Write `text` to `path` with the modification time `secs` after the epoch.
    fn write(path: &Path, text: &str, secs: u64) {
        std::fs::write(path, text).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_changed_file_is_reloaded_once_and_a_broken_one_keeps_the_policy() {
        let dir =
            std::env::temp_dir().join(format!("tee-gateway-policy-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("limit.toml");
        write(&path, "max = 1", 1_000);
        let policy = PolicyFile::<Limit>::load(&path).unwrap();
        assert!(matches!(policy.reload_if_changed(), Reload::Unchanged));

        write(&path, "max = 2", 2_000);
        assert!(matches!(policy.reload_if_changed(), Reload::Reloaded));
        assert_eq!(policy.current().max, 2);
        assert!(matches!(policy.reload_if_changed(), Reload::Unchanged));

        write(&path, "max = ", 3_000);
        assert!(matches!(
            policy.reload_if_changed(),
            Reload::Failed(PolicyLoadError::Parse { .. })
        ));
        assert_eq!(policy.current().max, 2);
        // A broken file is not read again until it changes.
        assert!(matches!(policy.reload_if_changed(), Reload::Unchanged));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            policy.reload_if_changed(),
            Reload::Failed(PolicyLoadError::Read { .. })
        ));
        write(&path, "max = 3", 4_000);
        assert!(matches!(policy.reload_if_changed(), Reload::Reloaded));
        assert_eq!(policy.current().max, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
