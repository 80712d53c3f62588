//! The cvm-agent: boot sequence, registration client, tunnel bring-up and keep-alive, port forwarding to
//! containers, local API.
//!
//! Joining the gateway: [`config`] is `agent.toml`, [`state`] the state directory (instance id kept across
//! restarts), [`client`] one registration attempt over mutual RA-TLS, [`backoff`] retry delays with jitter, [`run`]
//! the boot sequence and the registration loop.
//!
//! Forwarding to containers: [`target`] parses where each declared port goes, [`docker`] follows the Docker
//! engine to know which containers run and where, and [`forward`] listens on the declared ports and relays each
//! connection.

pub mod backoff;
pub mod client;
pub mod config;
pub mod docker;
pub mod forward;
pub mod run;
pub mod state;
pub mod target;
