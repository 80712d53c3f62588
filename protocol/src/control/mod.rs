//! Registration messages spoken between the cvm-agent and the gateway's control listener.
//!
//! Every message is JSON. Requests carry a protocol `version`; the gateway answers a version it does not speak with
//! [`ErrorCode::UnsupportedVersion`] before it looks at anything else, so the rest of a message may change shape in
//! later versions. Within a version, optional fields have defaults (an older agent may leave them out) and unknown
//! fields are refused (a field the gateway cannot honour is never silently dropped).
//!
//! - [`RegisterRequest`] / [`RegisterResponse`]: `POST /v1/register`.
//! - [`ErrorBody`]: the body of every refusal, with a machine-readable [`ErrorCode`] and a message a person can act
//!   on.
//! - [`ids`]: the grammar of app and instance ids.
//! - [`PublicKey`]: WireGuard public keys travel in messages as base64 of 32 bytes.

pub mod error;
pub mod ids;
pub mod messages;

pub use crate::key::{KeyError, PublicKey};
pub use error::{ErrorBody, ErrorCode};
pub use ids::{AppId, IdError, InstanceId};
pub use messages::{
    decode_register_request, GatewayTunnel, PortPolicy, RegisterRequest, RegisterResponse,
    TargetState, MAX_APP_POLICY_BYTES, MAX_PORTS,
};

/// The control protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Path of the registration endpoint on the gateway's control listener.
pub const REGISTER_PATH: &str = "/v1/register";

/// Path of the endpoint that serves the gateway's own evidence and claims.
pub const ATTESTATION_PATH: &str = "/v1/attestation";
