//! A scratch directory per test: configuration files, keys, state directories and logs of the programs under
//! test. It is removed when the test passes; when the test fails (the guard drops while the thread panics) it is
//! kept and its path printed, so the logs can be read.

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed on drop unless the test failed.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// Creates `tee-gateway-<label>-<random>` under the temporary directory.
    pub fn new(label: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tee-gateway-{label}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a scratch directory for {label}: {e}"));
        Scratch { dir: Some(dir) }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(tempfile::TempDir::path)
            .expect("present until dropped")
    }

    /// The path of `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if std::thread::panicking() {
                eprintln!(
                    "test failed: its files are kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}
