//! Intel TDX profiles.
//!
//! ```toml
//! [[apps.deadbeef11111111.profile]]
//! platform = "tdx"                       # or "sim-tdx"
//! mr_td = ["<96 hex digits>"]            # required: the allowed MRTDs
//! rtmr0 = ["<96 hex digits>"]            # optional allow lists: any value when absent
//! rtmr1 = ["<96 hex digits>"]
//! rtmr2 = ["<96 hex digits>"]
//! rtmr3 = ["<96 hex digits>"]
//! mr_config_id = ["<96 hex digits>"]
//! tcb_statuses = ["UpToDate"]            # optional: default UpToDate only
//! allow_debug = false                    # optional: default false
//! ```

use serde::{Deserialize, Serialize};

use super::{join_names, Violation};
use crate::claims::{Claims, PlatformClaims, TcbStatus};

/// An acceptable TDX trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxProfile {
    /// Allowed MRTD values (at least one).
    #[serde(with = "crate::hex_serde::list")]
    pub mr_td: Vec<[u8; 48]>,
    /// Allowed RTMR0 values; any when absent.
    #[serde(
        default,
        with = "crate::hex_serde::option_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub rtmr0: Option<Vec<[u8; 48]>>,
    /// Allowed RTMR1 values; any when absent.
    #[serde(
        default,
        with = "crate::hex_serde::option_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub rtmr1: Option<Vec<[u8; 48]>>,
    /// Allowed RTMR2 values; any when absent.
    #[serde(
        default,
        with = "crate::hex_serde::option_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub rtmr2: Option<Vec<[u8; 48]>>,
    /// Allowed RTMR3 values; any when absent.
    #[serde(
        default,
        with = "crate::hex_serde::option_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub rtmr3: Option<Vec<[u8; 48]>>,
    /// Allowed MRCONFIGID values; any when absent.
    #[serde(
        default,
        with = "crate::hex_serde::option_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub mr_config_id: Option<Vec<[u8; 48]>>,
    /// Acceptable TCB statuses (default: `UpToDate` only). `Revoked` is never accepted.
    #[serde(default = "up_to_date_only")]
    pub tcb_statuses: Vec<TcbStatus>,
    /// Whether a debuggable TD is acceptable (default: no).
    #[serde(default)]
    pub allow_debug: bool,
}

fn up_to_date_only() -> Vec<TcbStatus> {
    vec![TcbStatus::UpToDate]
}

fn one_of(values: &[[u8; 48]]) -> String {
    match values {
        [one] => hex::encode(one),
        many => format!(
            "one of {}",
            many.iter().map(hex::encode).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn check_list(
    field: &'static str,
    allowed: Option<&[[u8; 48]]>,
    actual: &[u8; 48],
) -> Result<(), Violation> {
    match allowed {
        Some(list) if !list.contains(actual) => Err(Violation::Mismatch {
            field,
            expected: one_of(list),
            actual: hex::encode(actual),
        }),
        _ => Ok(()),
    }
}

impl TdxProfile {
    /// A profile accepting exactly this MRTD, any RTMRs and config id, `UpToDate` TCB only, no debug.
    pub fn with_mr_td(mr_td: [u8; 48]) -> Self {
        TdxProfile {
            mr_td: vec![mr_td],
            rtmr0: None,
            rtmr1: None,
            rtmr2: None,
            rtmr3: None,
            mr_config_id: None,
            tcb_statuses: up_to_date_only(),
            allow_debug: false,
        }
    }

    /// Check TDX claims against the profile.
    pub fn check(&self, claims: &Claims) -> Result<(), Violation> {
        let PlatformClaims::Tdx(tdx) = &claims.details else {
            return Err(Violation::Mismatch {
                field: "evidence kind",
                expected: "tdx".into(),
                actual: "other".into(),
            });
        };
        check_list("MRTD", Some(&self.mr_td), &tdx.td.mr_td)?;
        let rtmrs = [&self.rtmr0, &self.rtmr1, &self.rtmr2, &self.rtmr3];
        for ((field, allowed), actual) in ["RTMR0", "RTMR1", "RTMR2", "RTMR3"]
            .into_iter()
            .zip(rtmrs)
            .zip(&tdx.td.rtmr)
        {
            check_list(field, allowed.as_deref(), actual)?;
        }
        check_list(
            "MRCONFIGID",
            self.mr_config_id.as_deref(),
            &tdx.td.mr_config_id,
        )?;
        if claims.debug && !self.allow_debug {
            return Err(Violation::Debug);
        }
        if tdx.tcb_status == TcbStatus::Revoked || !self.tcb_statuses.contains(&tdx.tcb_status) {
            return Err(Violation::TcbStatus {
                actual: tdx.tcb_status.to_string(),
                allowed: join_names(&self.tcb_statuses),
                advisories: tdx.advisory_ids.join(", "),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
