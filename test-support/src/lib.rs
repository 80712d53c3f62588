//! What the integration tests of every crate share, so that each test says only what it tests:
//!
//! - [`scratch`]: a scratch directory per test, removed when the test passes and kept when it fails;
//! - [`wait`]: waiting on a condition (a counter, a log line, a port) instead of sleeping;
//! - [`process`]: background processes killed when their guard drops, and programs run to completion;
//! - [`binaries`]: the workspace's binaries (built on demand) and files of the repository;
//! - [`claims`]: verified-claims values for tests that need no evidence;
//! - [`pki`]: a web PKI for client-facing TLS, and the simulated attestation PKI, made once per run;
//! - [`configs`]: the gateway's and the agent's configuration files and policies;
//! - [`logs`]: reading the timestamped log lines of the programs under test;
//! - [`lab`]: the network-namespace lab of `scripts/lab.sh`, its hosts and commands run inside them;
//! - [`firewall`], [`clients`], [`testserver`], [`tunnel`]: packet filters, real clients, backends and tunnel
//!   peers inside lab hosts;
//! - [`docker`]: containers of the test image, the Docker CLI and a relay for the engine's socket;
//! - [`tls`]: crafted ClientHello messages and the TLS records that carry them.
//!
//! It depends on the libraries below the binaries (`attestation`, `protocol`), never on `gateway` or
//! `cvm-agent`, whose own tests use it.
//!
//! Helpers fail the way tests fail: those that set up a test panic with a message naming what broke, those a
//! test may expect to fail return a `Result`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod binaries;
pub mod claims;
pub mod clients;
pub mod configs;
pub mod docker;
pub mod firewall;
pub mod lab;
pub mod logs;
pub mod pki;
pub mod process;
pub mod scratch;
pub mod testserver;
pub mod tls;
pub mod tunnel;
pub mod wait;

pub use lab::{Host, Lab};
pub use process::Process;
pub use scratch::Scratch;
pub use wait::{wait_for, wait_until};
