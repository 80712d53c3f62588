//! The operator's apps file (`attestation.app_policy`, e.g. `apps.toml`): what the operator may still say about an
//! app. It can deny an app; it cannot allow one.
//!
//! Which measurements may serve an app is decided by the app's owner in a signed policy
//! ([`attestation::owner`]), which the gateway keeps per app in its registry. The operator's file only blocks:
//!
//! ```toml
//! [apps.0123456789abcdef0123456789abcdef]
//! deny = true        # refuse every registration of the app and remove its instances
//! ```
//!
//! A file that still lists profiles (`[[apps.<id>.profile]]`, the format of earlier releases) is refused with a
//! message saying how to move them into a signed policy, rather than being read as a deny-nothing file: an
//! operator who thinks those profiles still admit (or restrict) something would be wrong either way.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The operator's apps file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorApps {
    /// App id to what the operator says about it.
    #[serde(default)]
    pub apps: BTreeMap<String, OperatorApp>,
}

/// What the operator says about one app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorApp {
    /// Refuse the app: no registration is admitted and registered instances are removed.
    #[serde(default)]
    pub deny: bool,
    /// Never present: profiles in this file are an error (see the module documentation).
    #[serde(default, deserialize_with = "profiles_moved", rename = "profile")]
    moved_profiles: ProfilesMoved,
}

/// How to move profiles out of the operator's file.
pub const PROFILES_MOVED: &str = "the operator's apps file no longer lists profiles: which CVMs may serve an app is \
    decided by the app's owner. Move the app's [[apps.<id>.profile]] tables into a file of [[profile]] tables, sign \
    it with the owner's key (`gateway app sign-policy --key OWNER.key --version N --profiles FILE --out \
    policy.json`; `gateway app keygen` makes a key, and the app id it prints replaces the old one), then give \
    policy.json to the app's agents (`app_policy` in agent.toml) or upload it (`PUT /v1/apps/<id>/policy` on the \
    admin API). This file may keep `deny = true` per app";

/// What stands for the `profile` key that must not be there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ProfilesMoved;

fn profiles_moved<'de, D: Deserializer<'de>>(_: D) -> Result<ProfilesMoved, D::Error> {
    Err(serde::de::Error::custom(PROFILES_MOVED))
}

impl OperatorApps {
    /// Parses the file's TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Whether the operator denies `app_id`.
    pub fn denies(&self, app_id: &str) -> bool {
        self.apps.get(app_id).is_some_and(|a| a.deny)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_is_read_and_profiles_are_refused_with_the_way_out() {
        let apps = OperatorApps::from_toml(
            "[apps.aaaaaaaaaaaaaaaa]\ndeny = true\n[apps.bbbbbbbbbbbbbbbb]\n",
        )
        .unwrap();
        assert!(apps.denies("aaaaaaaaaaaaaaaa"));
        assert!(!apps.denies("bbbbbbbbbbbbbbbb"));
        assert!(!apps.denies("cccccccccccccccc"));
        assert_eq!(
            OperatorApps::from_toml("").unwrap(),
            OperatorApps::default()
        );

        let old = format!(
            "[[apps.aaaaaaaaaaaaaaaa.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
            "42".repeat(48)
        );
        let e = OperatorApps::from_toml(&old).unwrap_err().to_string();
        assert!(e.contains("gateway app sign-policy"), "{e}");
        assert!(e.contains("PUT /v1/apps/<id>/policy"), "{e}");
        assert!(OperatorApps::from_toml("[apps.aaaaaaaaaaaaaaaa]\nallow = true\n").is_err());
    }
}
