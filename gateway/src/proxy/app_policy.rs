//! The admin API's seam to the app owners' signed policies: `PUT /v1/apps/{id}/policy` hands the document an app's
//! owner signed to an [`AppPolicyIntake`] (the registration service), which verifies it and keeps it if it is newer
//! than the policy in force.

use std::sync::{Arc, OnceLock};

/// Where the admin API sends an owner's signed policy.
pub trait AppPolicyIntake: Send + Sync {
    /// Offers `document` (a signed app policy, JSON) for `app_id`. Blocking: it writes to the database.
    fn offer(&self, app_id: &str, document: &str) -> Result<PolicyAccepted, PolicyRejected>;
}

/// A policy the intake took (or already had in a newer version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyAccepted {
    /// Whether it is now the app's policy (`false`: the one in force is as new or newer, nothing changed).
    pub installed: bool,
    /// The version in force afterwards.
    pub version: u64,
}

/// Why the intake refused a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRejected {
    /// Not a valid policy of the app: not a document, a bad signature, a key that does not own the app id.
    #[error("{0}")]
    Invalid(String),
    /// The same version with other content is in force.
    #[error("{0}")]
    Conflict(String),
    /// The gateway failed to store it; nothing changed.
    #[error("{0}")]
    Internal(String),
}

/// The intake the admin API uses, attached once at start.
#[derive(Default)]
pub struct PolicyIntakeSlot(OnceLock<Arc<dyn AppPolicyIntake>>);

impl PolicyIntakeSlot {
    /// Attaches the intake; a second one is ignored (returns `false`).
    pub fn attach(&self, intake: Arc<dyn AppPolicyIntake>) -> bool {
        self.0.set(intake).is_ok()
    }

    /// The attached intake.
    pub fn get(&self) -> Option<&Arc<dyn AppPolicyIntake>> {
        self.0.get()
    }
}
