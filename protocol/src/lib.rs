//! Protocols spoken between the gateway and the cvm-agent.
//!
//! - `control`: registration messages (versioned, `serde`).
//! - `tunnel`: the WireGuard endpoint built on `boringtun::noise::Tunn` (UDP socket, TUN device, peer table,
//!   timers, health).

pub mod control;
pub mod tunnel;
