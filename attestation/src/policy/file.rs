//! Policy files that can be re-read while the program runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

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
}

impl<P: DeserializeOwned> PolicyFile<P> {
    /// Load the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolicyLoadError> {
        let path = path.as_ref().to_path_buf();
        let policy = read(&path)?;
        Ok(PolicyFile {
            path,
            current: RwLock::new(Arc::new(policy)),
        })
    }

    /// Re-read the file; on error the previous policy stays in force and the error is returned.
    pub fn reload(&self) -> Result<(), PolicyLoadError> {
        let policy = Arc::new(read(&self.path)?);
        match self.current.write() {
            Ok(mut g) => *g = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
        tracing::info!(path = %self.path.display(), "policy reloaded");
        Ok(())
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

fn read<P: DeserializeOwned>(path: &Path) -> Result<P, PolicyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| PolicyLoadError::Parse {
        path: path.to_path_buf(),
        source,
    })
}
