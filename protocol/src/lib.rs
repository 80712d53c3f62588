//! Protocols spoken between the gateway and the cvm-agent.
//!
//! - `control`: registration messages (versioned, `serde`).
//! - `key`: WireGuard keys, shared by both.
//! - `tunnel`: the WireGuard endpoint built on `boringtun::noise::Tunn` (UDP socket, TUN device, peer table,
//!   timers, health).

pub mod control;
pub mod key;
pub mod tunnel;
