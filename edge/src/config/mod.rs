//! Loading a configuration file: read it, parse it into the file's schema, convert it into the checked
//! configuration a program runs with. Each step's failure is its own [`ConfigError`] variant naming the file, so
//! `check-config` and `run` report the same thing.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

mod every_error;

/// Why a configuration file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (includes unknown keys).
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// The file parsed but its values are unusable.
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, one sentence each.
        problems: Vec<String>,
    },
}

/// Reads `path`, parses it as the schema `F`, and converts it with `check`, which returns the checked
/// configuration or every problem it found. A file with several schema errors reports all of them
/// ([`ConfigError::Invalid`], one problem each); a file with one reports it as [`ConfigError::Parse`].
pub fn load_toml<F, C>(
    path: &Path,
    check: impl FnOnce(F) -> Result<C, Vec<String>>,
) -> Result<C, ConfigError>
where
    F: DeserializeOwned,
{
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: F = every_error::parse(&text).map_err(|mut errors| {
        if errors.len() == 1 {
            ConfigError::Parse {
                path: path.to_path_buf(),
                source: Box::new(errors.remove(0)),
            }
        } else {
            // Several mistakes: each one a problem of its own, its location lines indented under it.
            ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: errors
                    .iter()
                    .map(|e| e.to_string().trim_end().replace('\n', "\n    "))
                    .collect(),
            }
        }
    })?;
    check(file).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// What `check-config` prints and returns for a loaded file: on stdout `PATH: ok (SUMMARY)` and success, or on
/// stderr every problem of an unusable file, one per line, and failure.
pub fn check_report<C>(
    path: &Path,
    loaded: Result<C, ConfigError>,
    summary: impl FnOnce(&C) -> String,
) -> std::process::ExitCode {
    match loaded {
        Ok(config) => {
            println!("{}: ok ({})", path.display(), summary(&config));
            std::process::ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { path, problems }) => {
            eprintln!("{}: {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        port: u32,
    }

    fn check(f: File) -> Result<u16, Vec<String>> {
        u16::try_from(f.port).map_err(|_| vec![format!("port = {} is not a port", f.port)])
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn each_step_has_its_own_error_naming_the_file() {
        let (_d, path) = write("port = 8080\n");
        assert_eq!(load_toml(&path, check).unwrap(), 8080);

        let missing = path.with_file_name("absent.toml");
        let e = load_toml(&missing, check).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().contains("absent.toml"), "{e}");

        let (_d, path) = write("port = 1\nprot = 2\n");
        let e = load_toml(&path, check).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("unknown field `prot`"), "{e}");

        let (_d, path) = write("port = 70000\n");
        let e = load_toml(&path, check).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { problems, .. } if problems == &["port = 70000 is not a port"]),
            "{e}"
        );
    }
}
