//! The agent's state directory: what must survive a restart (the instance id).
//!
//! Files are written atomically (temporary file, fsync, rename, fsync of the directory), so a crash never leaves
//! a half-written id behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use protocol::control::InstanceId;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or the directory could not be read or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The stored instance id is not a valid id.
    #[error("{path} holds {content:?}, not an instance id ({reason}); fix or delete the file")]
    BadInstanceId {
        /// The file.
        path: PathBuf,
        /// What it holds (truncated).
        content: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// The agent's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

const INSTANCE_ID_FILE: &str = "instance-id";

impl StateDir {
    /// Opens (creating if needed, mode 0700) a state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The instance id stored here, or a fresh one (stored before it is returned).
    pub fn instance_id(&self) -> Result<(InstanceId, bool), StateError> {
        let path = self.dir.join(INSTANCE_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let text = text.trim();
                let id = text.parse().map_err(|e: protocol::control::IdError| {
                    StateError::BadInstanceId {
                        path: path.clone(),
                        content: text.chars().take(64).collect(),
                        reason: e.to_string(),
                    }
                })?;
                Ok((id, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = InstanceId::random();
                self.write_atomic(INSTANCE_ID_FILE, format!("{id}\n").as_bytes())?;
                Ok((id, true))
            }
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    fn write_atomic(&self, name: &str, contents: &[u8]) -> Result<(), StateError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!(
            "tg-agent-state-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let state = StateDir::open(&dir.join("nested")).unwrap();
        let (id, fresh) = state.instance_id().unwrap();
        assert!(fresh);
        let (again, fresh) = StateDir::open(&dir.join("nested"))
            .unwrap()
            .instance_id()
            .unwrap();
        assert!(!fresh);
        assert_eq!(id, again);
        fs::write(dir.join("nested").join(INSTANCE_ID_FILE), "not-an-id\n").unwrap();
        let e = state.instance_id().unwrap_err();
        assert!(e.to_string().contains("not-an-id"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
