//! The control plane: registration of CVM instances over mutual RA-TLS.
//!
//! - [`service`] — the registration logic as plain functions (decode, authorise against the app policy, store,
//!   update the tunnel's peers, answer), independent of HTTP and TLS.
//! - [`peer`] — what the control plane knows about the other end of a connection (its verified attestation).
//! - [`tunnel`] — the seam to the WireGuard endpoint ([`PeerTable`]).
//! - [`http`] — the axum routes (`POST /v1/register`, `GET /v1/attestation`), body and rate limits, typed errors.
//! - [`operator`] — the operator's apps file, which may deny an app but never allow one.
//! - [`rate`] — per-source token buckets.
//! - [`listener`] — TLS accept loop feeding axum, with handshake timeout and a connection limit.

pub mod http;
pub mod listener;
pub mod operator;
pub mod peer;
pub mod rate;
pub mod service;
pub mod tunnel;

pub use peer::{ControlPeer, PeerAttestation};
pub use service::{ControlService, ResponseSettings};
pub use tunnel::{PeerError, PeerTable};
