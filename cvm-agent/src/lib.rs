//! The cvm-agent: boot sequence, registration client, tunnel bring-up and keep-alive, port forwarding to
//! containers, local API.
//!
//! Forwarding to containers: [`target`] parses where each declared port goes, [`docker`] follows the Docker
//! engine to know which containers run and where, and [`forward`] listens on the declared ports and relays each
//! connection.

pub mod docker;
pub mod forward;
pub mod target;
