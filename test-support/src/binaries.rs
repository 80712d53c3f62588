//! The workspace's programs as the tests run them, and files of the repository (scripts, tools, samples).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The binaries the lab tests run, built together by [`workspace_binary`] when one is missing.
const STACK_BINARIES: [&str; 3] = ["gateway", "cvm-agent", "testserver"];

/// A binary of this workspace, next to the running test's directory (`target/<profile>/NAME`). When one of the
/// stack's binaries is missing, they are built first (`cargo build -p gateway -p cvm-agent -p testserver`); a
/// binary left over from an older build is used as it is, so build them after changing their code. (A crate's
/// own tests use `env!("CARGO_BIN_EXE_<name>")` instead, which cargo keeps current.)
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let exe = std::env::current_exe().expect("locating the test binary");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary has a target directory");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built && STACK_BINARIES.iter().any(|b| !dir.join(b).exists()) {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("build");
        for b in STACK_BINARIES {
            cmd.args(["-p", b]);
        }
        let status = cmd.arg("--bins").status().expect("running cargo build");
        assert!(status.success(), "building {STACK_BINARIES:?} failed");
    }
    *built = true;
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// The path of a file in this repository, `relative` to its root.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}
