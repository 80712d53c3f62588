//! Shared by the tests that run `gateway attestation` as a program.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

/// A scratch directory, removed on drop (also when the test fails).
pub fn dir() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// Run `gateway attestation ARGS`: (exit code, stdout, stderr).
pub fn gateway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("attestation")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}
