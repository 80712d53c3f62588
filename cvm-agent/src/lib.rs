//! The cvm-agent: boot sequence, registration client, tunnel bring-up and keep-alive, port forwarding to
//! containers, local API.
//!
//! Joining the gateway: [`config`] is `agent.toml`, [`state`] the state directory (instance id kept across
//! restarts), [`client`] one registration attempt over mutual RA-TLS, [`backoff`] retry delays with jitter, [`supervisor`]
//! the decisions of the registration loop (when to register, restart the session, build the tunnel) as a state
//! machine fed events and time, [`tunnel`] the WireGuard tunnel to the gateway, [`registration`] the driver that
//! does the supervisor's I/O, [`run`] the boot sequence and the serving agent; [`tasks`] is how every task is
//! owned, stopped and watched.
//!
//! Forwarding to containers: [`target`] parses where each declared port goes, [`docker`] follows the Docker
//! engine to know which containers run and where, and [`forward`] listens on the declared ports and relays each
//! connection.

pub mod app_policy;
pub mod backoff;
pub mod client;
pub mod config;
pub mod docker;
pub mod forward;
pub mod registration;
pub mod run;
pub mod state;
pub mod supervisor;
pub mod target;
pub mod tasks;
pub mod tunnel;
