//! `POST /v1/register`: the request an agent sends and the answer it gets.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::error::{ErrorBody, ErrorCode};
use super::ids::{AppId, InstanceId};
use super::PROTOCOL_VERSION;
use crate::key::PublicKey;

/// Most ports one instance may declare.
pub const MAX_PORTS: usize = 64;

/// The longest app policy document a registration may carry, in bytes.
pub const MAX_APP_POLICY_BYTES: usize = 12 * 1024;

/// Whether the local target behind a declared port currently answers (filled in by the agent's forwarder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// A target is running and accepts connections.
    Up,
    /// No target is running; connections to this port are refused.
    Down,
}

/// One port an instance exposes through the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortPolicy {
    /// The port on the instance's tunnel address (1-65535).
    pub port: u16,
    /// Whether the gateway prefixes each relayed connection with a PROXY protocol v2 header.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The state of the local target, when the agent knows it. Absent means unknown (treated as up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_state: Option<TargetState>,
}

impl PortPolicy {
    /// A port without PROXY protocol and with unknown target state.
    pub fn plain(port: u16) -> Self {
        Self {
            port,
            proxy_protocol: false,
            target_state: None,
        }
    }
}

/// The body of `POST /v1/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The control protocol version ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// The app this instance belongs to; its policy must accept the agent's attestation.
    pub app_id: AppId,
    /// The instance's id, kept across agent restarts.
    pub instance_id: InstanceId,
    /// The agent's WireGuard public key.
    pub wireguard_public_key: PublicKey,
    /// The ports the instance exposes.
    #[serde(default)]
    pub ports: Vec<PortPolicy>,
    /// The app's policy as its owner signed it (the JSON text of a signed app policy document), when the agent
    /// carries one. The gateway keeps the highest version it has seen and admits instances only under it; this
    /// crate does not look inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_policy: Option<String>,
}

impl RegisterRequest {
    /// Checks what serde cannot: ports in range, no duplicates, not too many.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        if self.version != PROTOCOL_VERSION {
            return Err(unsupported_version(u64::from(self.version)));
        }
        if self.ports.len() > MAX_PORTS {
            return Err(ErrorBody::new(
                ErrorCode::InvalidPorts,
                format!(
                    "{} ports declared; at most {MAX_PORTS} are allowed",
                    self.ports.len()
                ),
            ));
        }
        if let Some(policy) = &self.app_policy {
            if policy.len() > MAX_APP_POLICY_BYTES {
                return Err(ErrorBody::new(
                    ErrorCode::MalformedRequest,
                    format!(
                        "the app policy carried has {} bytes; at most {MAX_APP_POLICY_BYTES} are allowed",
                        policy.len()
                    ),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for p in &self.ports {
            if p.port == 0 {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidPorts,
                    "port 0 is not a valid port",
                ));
            }
            if !seen.insert(p.port) {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidPorts,
                    format!("port {} is declared more than once", p.port),
                ));
            }
        }
        Ok(())
    }
}

fn unsupported_version(v: u64) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::UnsupportedVersion,
        format!("unsupported protocol version {v}; this gateway speaks version {PROTOCOL_VERSION}"),
    )
}

/// Decodes and validates a register request body, answering each problem with its typed error.
///
/// The version is checked first, so a request from a newer agent gets `unsupported_version` rather than a
/// complaint about fields it added. Then ids, the key and the ports are checked one by one, each with its own code.
pub fn decode_register_request(body: &[u8]) -> Result<RegisterRequest, ErrorBody> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ErrorBody::new(
            ErrorCode::MalformedRequest,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(ErrorBody::new(
            ErrorCode::MalformedRequest,
            "request body must be a JSON object",
        ));
    };
    match object.get("version") {
        None => {
            return Err(ErrorBody::new(
                ErrorCode::MalformedRequest,
                "request has no \"version\" field",
            ));
        }
        Some(v) => match v.as_u64() {
            Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
            Some(v) => return Err(unsupported_version(v)),
            None => {
                return Err(ErrorBody::new(
                    ErrorCode::MalformedRequest,
                    format!("\"version\" must be a non-negative integer, got {v}"),
                ))
            }
        },
    }
    for (field, code) in [
        ("app_id", ErrorCode::InvalidId),
        ("instance_id", ErrorCode::InvalidId),
    ] {
        if let Some(serde_json::Value::String(s)) = object.get(field) {
            if let Err(e) = s.parse::<AppId>() {
                return Err(ErrorBody::new(code, format!("{field}: {e}")));
            }
        }
    }
    if let Some(serde_json::Value::String(s)) = object.get("wireguard_public_key") {
        if let Err(e) = s.parse::<PublicKey>() {
            return Err(ErrorBody::new(ErrorCode::InvalidKey, e.to_string()));
        }
    }
    let request: RegisterRequest = serde_json::from_value(value).map_err(|e| {
        ErrorBody::new(
            ErrorCode::MalformedRequest,
            format!("request body does not match the register request: {e}"),
        )
    })?;
    request.validate()?;
    Ok(request)
}

/// How the agent reaches the gateway through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayTunnel {
    /// The gateway's WireGuard public key.
    pub public_key: PublicKey,
    /// The gateway's WireGuard UDP endpoint, `host:port`.
    pub endpoint: String,
    /// The gateway's address inside the tunnel.
    pub tunnel_address: Ipv4Addr,
}

/// The answer to a successful registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The control protocol version of the answer.
    pub version: u32,
    /// The instance id the registration was stored under.
    pub instance_id: InstanceId,
    /// The instance's tunnel address (stable across re-registrations).
    pub tunnel_address: Ipv4Addr,
    /// Prefix length of the tunnel network.
    pub tunnel_prefix_len: u8,
    /// How to reach the gateway through the tunnel.
    pub gateway: GatewayTunnel,
    /// WireGuard persistent keep-alive the agent should use, in seconds.
    pub keepalive_secs: u64,
    /// How often the agent should register again, in seconds.
    pub reregister_secs: u64,
    /// The base domains under which the app's host names are served.
    pub base_domains: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "app_id": "deadbeef111111111111111111111111",
            "instance_id": "0123456789abcdef",
            "wireguard_public_key": PublicKey::from_bytes([9; 32]).unwrap().to_string(),
            "ports": [{"port": 8080}, {"port": 443, "proxy_protocol": true, "target_state": "down"}],
        })
    }

    fn decode(v: &serde_json::Value) -> Result<RegisterRequest, ErrorBody> {
        decode_register_request(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn decodes_a_valid_request() {
        let r = decode(&valid()).unwrap();
        assert_eq!(r.app_id.as_str(), "deadbeef111111111111111111111111");
        assert_eq!(r.ports[0], PortPolicy::plain(8080));
        assert!(r.ports[1].proxy_protocol);
        assert_eq!(r.ports[1].target_state, Some(TargetState::Down));
        let again: RegisterRequest =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn each_problem_gets_its_code() {
        assert_eq!(
            decode_register_request(b"{not json").unwrap_err().error,
            ErrorCode::MalformedRequest
        );
        assert_eq!(
            decode_register_request(b"[1,2]").unwrap_err().error,
            ErrorCode::MalformedRequest
        );

        let mut v = valid();
        v["version"] = 7.into();
        v["something_new"] = true.into();
        let e = decode(&v).unwrap_err();
        assert_eq!(e.error, ErrorCode::UnsupportedVersion);
        assert!(
            e.message.contains("unsupported protocol version 7"),
            "{}",
            e.message
        );

        let mut v = valid();
        v.as_object_mut().unwrap().remove("version");
        assert_eq!(decode(&v).unwrap_err().error, ErrorCode::MalformedRequest);

        let mut v = valid();
        v["wireguard_public_key"] = "AAEC".into();
        let e = decode(&v).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidKey);
        assert!(e.message.contains("32 bytes"), "{}", e.message);

        let mut v = valid();
        v["app_id"] = "Not-An-Id".into();
        assert_eq!(decode(&v).unwrap_err().error, ErrorCode::InvalidId);

        let mut v = valid();
        v["ports"] = serde_json::json!([{"port": 80}, {"port": 80}]);
        assert_eq!(decode(&v).unwrap_err().error, ErrorCode::InvalidPorts);

        let mut v = valid();
        v["ports"] = serde_json::json!([{"port": 0}]);
        assert_eq!(decode(&v).unwrap_err().error, ErrorCode::InvalidPorts);

        let mut v = valid();
        v["ports"] = serde_json::json!([{"port": 70000}]);
        assert_eq!(decode(&v).unwrap_err().error, ErrorCode::MalformedRequest);

        let mut v = valid();
        v["extra"] = 1.into();
        assert_eq!(decode(&v).unwrap_err().error, ErrorCode::MalformedRequest);

        let mut v = valid();
        v["app_policy"] = "x".repeat(MAX_APP_POLICY_BYTES + 1).into();
        let e = decode(&v).unwrap_err();
        assert_eq!(e.error, ErrorCode::MalformedRequest);
        assert!(e.message.contains("app policy"), "{}", e.message);
    }

    #[test]
    fn the_app_policy_is_optional_and_carried_as_text() {
        assert_eq!(decode(&valid()).unwrap().app_policy, None);
        let mut v = valid();
        v["app_policy"] = "{\"format\": \"tee-gateway/app-policy/v1\"}".into();
        let r = decode(&v).unwrap();
        assert_eq!(
            r.app_policy.as_deref(),
            Some("{\"format\": \"tee-gateway/app-policy/v1\"}")
        );
        let without = RegisterRequest {
            app_policy: None,
            ..r
        };
        let json = serde_json::to_value(&without).unwrap();
        assert!(json.get("app_policy").is_none(), "{json}");
    }

    #[test]
    fn target_state_is_optional_for_older_agents() {
        let p: PortPolicy = serde_json::from_str(r#"{"port": 22}"#).unwrap();
        assert_eq!(p, PortPolicy::plain(22));
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"port":22,"proxy_protocol":false}"#
        );
    }
}
