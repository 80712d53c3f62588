//! The typed error body of every refusal on the control listener.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, for programs. Each code has one HTTP status ([`ErrorCode::http_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request's `version` is not one the gateway speaks.
    UnsupportedVersion,
    /// The body is not the JSON the endpoint expects.
    MalformedRequest,
    /// The body is larger than the gateway accepts.
    BodyTooLarge,
    /// The body is not declared as `application/json`.
    UnsupportedMediaType,
    /// Too many requests from this peer; retry later.
    RateLimited,
    /// An app or instance id does not follow the id grammar.
    InvalidId,
    /// The WireGuard public key is not 32 bytes of base64.
    InvalidKey,
    /// The port policy is invalid (port 0, duplicates, too many ports).
    InvalidPorts,
    /// No policy exists for the app id.
    AppUnknown,
    /// The client's attestation does not satisfy the app's policy.
    PolicyRefused,
    /// The client presented no verified RA-TLS certificate.
    AttestationRequired,
    /// The WireGuard key is already held by another instance.
    KeyInUse,
    /// The instance id is registered for another app.
    InstanceBoundToOtherApp,
    /// The instance id equals an app id, which would make host names ambiguous.
    InstanceIdIsAppId,
    /// No tunnel address is left.
    AddressPoolExhausted,
    /// The app already has as many instances as the gateway admits per app; an instance already registered
    /// is never refused for this.
    InstanceQuotaExceeded,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The gateway failed; the request may be retried.
    Internal,
    /// A code this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the gateway answers this error with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::UnsupportedVersion
            | Self::MalformedRequest
            | Self::InvalidId
            | Self::InvalidKey
            | Self::InvalidPorts => 400,
            Self::AttestationRequired => 401,
            Self::AppUnknown | Self::PolicyRefused | Self::InstanceQuotaExceeded => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::KeyInUse | Self::InstanceBoundToOtherApp | Self::InstanceIdIsAppId => 409,
            Self::BodyTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::Internal | Self::Unknown => 500,
            Self::AddressPoolExhausted => 503,
        }
    }

    /// Whether retrying the same request later may succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Internal
                | Self::AddressPoolExhausted
                | Self::InstanceQuotaExceeded
                | Self::Unknown
        )
    }
}

/// The JSON body of a refusal: `{"error": "policy_refused", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The machine-readable code.
    pub error: ErrorCode,
    /// What happened and what to do about it, for a person.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> u16 {
        self.error.http_status()
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = serde_json::to_value(self.error)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", self.error));
        write!(f, "{code}: {}", self.message)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_snake_case_and_tolerates_unknown_codes() {
        let body = ErrorBody::new(ErrorCode::KeyInUse, "key held by instance 0123abcd");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"error":"key_in_use","message":"key held by instance 0123abcd"}"#
        );
        let future: ErrorBody =
            serde_json::from_str(r#"{"error":"something_new","message":"m"}"#).unwrap();
        assert_eq!(future.error, ErrorCode::Unknown);
        assert_eq!(
            body.to_string(),
            "key_in_use: key held by instance 0123abcd"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::UnsupportedVersion.http_status(), 400);
        assert_eq!(ErrorCode::PolicyRefused.http_status(), 403);
        assert_eq!(ErrorCode::BodyTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert!(ErrorCode::RateLimited.is_transient());
        assert!(!ErrorCode::PolicyRefused.is_transient());
        assert_eq!(ErrorCode::InstanceQuotaExceeded.http_status(), 403);
        // Instances expire or are removed: a refused agent retries with backoff.
        assert!(ErrorCode::InstanceQuotaExceeded.is_transient());
        assert_eq!(
            serde_json::to_string(&ErrorCode::InstanceQuotaExceeded).unwrap(),
            r#""instance_quota_exceeded""#
        );
    }
}
