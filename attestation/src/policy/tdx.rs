//! Intel TDX profiles.
//!
//! A TDX profile pins the whole boot chain: MRTD measures the firmware (TDVF), RTMR0 its configuration (ACPI
//! tables, boot variables), RTMR1 the boot loader and kernel, RTMR2 the kernel command line and initrd. A profile
//! that pinned MRTD alone would accept any kernel booted on that firmware, so `rtmr0`, `rtmr1` and `rtmr2` are
//! required: each an allow list, or the explicit string `"any"` for a register the operator chooses not to pin.
//!
//! ```toml
//! [[apps.deadbeef11111111.profile]]
//! platform = "tdx"                       # or "sim-tdx"
//! mr_td = ["<96 hex digits>"]            # required: the allowed MRTDs
//! rtmr0 = ["<96 hex digits>"]            # required: an allow list, or "any"
//! rtmr1 = ["<96 hex digits>"]            # required: an allow list, or "any"
//! rtmr2 = ["<96 hex digits>"]            # required: an allow list, or "any"
//! rtmr3 = ["<96 hex digits>"]            # optional allow lists: any value when absent
//! mr_config_id = ["<96 hex digits>"]
//! tcb_statuses = ["UpToDate"]            # optional: default UpToDate only
//! allow_debug = false                    # optional: default false
//! ```

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{join_names, Violation};
use crate::claims::{Claims, PlatformClaims, TcbStatus};

/// What a profile accepts for a register it must state: a list of values, or explicitly any value.
///
/// In TOML: a non-empty list of 96-hex-digit strings, or the string `"any"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Any value: the profile deliberately does not pin this register.
    Any,
    /// One of these values (at least one).
    OneOf(Vec<[u8; 48]>),
}

impl Pin {
    /// Exactly this value.
    pub fn exactly(value: [u8; 48]) -> Self {
        Pin::OneOf(vec![value])
    }

    /// The allowed values, or `None` for any.
    pub fn values(&self) -> Option<&[[u8; 48]]> {
        match self {
            Pin::Any => None,
            Pin::OneOf(list) => Some(list),
        }
    }
}

impl Serialize for Pin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pin::Any => s.serialize_str("any"),
            Pin::OneOf(list) => list
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>()
                .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PinVisitor)
    }
}

struct PinVisitor;

impl<'de> Visitor<'de> for PinVisitor {
    type Value = Pin;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of 96-hex-digit values, or the string \"any\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Pin, E> {
        if v == "any" {
            Ok(Pin::Any)
        } else {
            Err(E::custom(format!(
                "expected a list of 96-hex-digit values or the string \"any\", got the string {v:?} \
                 (a single value is written as a list: [\"<96 hex digits>\"])"
            )))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pin, A::Error> {
        let mut values = Vec::new();
        while let Some(text) = seq.next_element::<String>()? {
            let bytes = hex::decode(&text).map_err(de::Error::custom)?;
            let value = <[u8; 48]>::try_from(bytes.as_slice()).map_err(|_| {
                de::Error::custom(format!("expected 48 bytes of hex, got {}", bytes.len()))
            })?;
            values.push(value);
        }
        if values.is_empty() {
            return Err(de::Error::custom(
                "an empty list allows no value: list the allowed values, or write \"any\"",
            ));
        }
        Ok(Pin::OneOf(values))
    }
}

/// An acceptable TDX trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TdxProfileText")]
pub struct TdxProfile {
    /// Allowed MRTD values (at least one).
    #[serde(with = "crate::hex_serde::list")]
    pub mr_td: Vec<[u8; 48]>,
    /// Allowed RTMR0 values (firmware configuration), or any.
    pub rtmr0: Pin,
    /// Allowed RTMR1 values (boot loader and kernel), or any.
    pub rtmr1: Pin,
    /// Allowed RTMR2 values (kernel command line and initrd), or any.
    pub rtmr2: Pin,
    /// Allowed RTMR3 values; any when absent.
    #[serde(
        with = "crate::hex_serde::option_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub rtmr3: Option<Vec<[u8; 48]>>,
    /// Allowed MRCONFIGID values; any when absent.
    #[serde(
        with = "crate::hex_serde::option_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub mr_config_id: Option<Vec<[u8; 48]>>,
    /// Acceptable TCB statuses (default: `UpToDate` only). `Revoked` is never accepted.
    pub tcb_statuses: Vec<TcbStatus>,
    /// Whether a debuggable TD is acceptable (default: no).
    pub allow_debug: bool,
}

/// A TDX profile as written, before the required registers are checked to be present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TdxProfileText {
    #[serde(with = "crate::hex_serde::list")]
    mr_td: Vec<[u8; 48]>,
    #[serde(default)]
    rtmr0: Option<Pin>,
    #[serde(default)]
    rtmr1: Option<Pin>,
    #[serde(default)]
    rtmr2: Option<Pin>,
    #[serde(default, with = "crate::hex_serde::option_list")]
    rtmr3: Option<Vec<[u8; 48]>>,
    #[serde(default, with = "crate::hex_serde::option_list")]
    mr_config_id: Option<Vec<[u8; 48]>>,
    #[serde(default = "up_to_date_only")]
    tcb_statuses: Vec<TcbStatus>,
    #[serde(default)]
    allow_debug: bool,
}

/// What RTMR0-2 hold, for the message that names a missing one.
const REQUIRED: [(&str, &str); 3] = [
    ("rtmr0", "firmware configuration"),
    ("rtmr1", "boot loader and kernel"),
    ("rtmr2", "kernel command line and initrd"),
];

impl TryFrom<TdxProfileText> for TdxProfile {
    type Error = String;

    fn try_from(t: TdxProfileText) -> Result<Self, String> {
        let (rtmr0, rtmr1, rtmr2) = match (t.rtmr0, t.rtmr1, t.rtmr2) {
            (Some(r0), Some(r1), Some(r2)) => (r0, r1, r2),
            (r0, r1, r2) => {
                let absent = [r0.is_none(), r1.is_none(), r2.is_none()];
                let missing: Vec<_> = REQUIRED
                    .iter()
                    .zip(absent)
                    .filter_map(|(&(key, what), absent)| absent.then_some((key, what)))
                    .collect();
                let named: Vec<String> = missing
                    .iter()
                    .map(|(key, what)| format!("{key} ({what})"))
                    .collect();
                let key = missing.first().map_or("rtmr0", |(key, _)| key);
                return Err(format!(
                    "a TDX profile must pin the boot chain, not only MRTD: missing {}. Write each as its \
                     allowed values, e.g. {key} = [\"<96 hex digits>\"], or as {key} = \"any\" to accept any \
                     value explicitly",
                    named.join(", ")
                ));
            }
        };
        Ok(TdxProfile {
            mr_td: t.mr_td,
            rtmr0,
            rtmr1,
            rtmr2,
            rtmr3: t.rtmr3,
            mr_config_id: t.mr_config_id,
            tcb_statuses: t.tcb_statuses,
            allow_debug: t.allow_debug,
        })
    }
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
    /// A profile accepting exactly this MRTD and these RTMR0-2, any RTMR3 and config id, `UpToDate` TCB only, no
    /// debug.
    pub fn pinned(mr_td: [u8; 48], rtmrs: [[u8; 48]; 3]) -> Self {
        let [rtmr0, rtmr1, rtmr2] = rtmrs.map(Pin::exactly);
        TdxProfile {
            mr_td: vec![mr_td],
            rtmr0,
            rtmr1,
            rtmr2,
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
        let rtmrs = [
            self.rtmr0.values(),
            self.rtmr1.values(),
            self.rtmr2.values(),
            self.rtmr3.as_deref(),
        ];
        for ((field, allowed), actual) in ["RTMR0", "RTMR1", "RTMR2", "RTMR3"]
            .into_iter()
            .zip(rtmrs)
            .zip(&tdx.td.rtmr)
        {
            check_list(field, allowed, actual)?;
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
