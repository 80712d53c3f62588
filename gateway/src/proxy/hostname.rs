//! The host-name grammar that routes client connections.
//!
//! A client names its destination in the TLS SNI as `<id>[-<port>][s|g].<base-domain>`:
//!
//! - `id` is an app id or an instance id: lowercase hexadecimal, 8 to 40 characters;
//! - `port` is the instance port, decimal without leading zeros, 1 to 65535; it defaults to 80, or to 443 with
//!   the `s` suffix;
//! - no suffix means TLS is terminated at the gateway (ALPN `http/1.1`), `s` means TLS passthrough, `g` means
//!   terminated with ALPN `h2` for gRPC; `gs` is refused;
//! - the whole first label is at most 63 characters, and names match case-insensitively;
//! - `gateway.<base-domain>` is reserved for the gateway's own attestation.
//!
//! Several base domains can be served at once; a name routes under the base domain it ends with, and the part
//! in front of the base domain must be exactly one label.

use std::fmt;

/// Shortest accepted id, in hex characters.
pub const MIN_ID_LEN: usize = 8;
/// Longest accepted id, in hex characters.
pub const MAX_ID_LEN: usize = 40;
/// Longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;
/// The reserved first label that names the gateway itself.
pub const GATEWAY_LABEL: &str = "gateway";

/// What the gateway does with the client's TLS session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// TLS terminated at the gateway with ALPN `http/1.1`, plain bytes relayed to the instance.
    Terminate,
    /// TLS terminated at the gateway with ALPN `h2` (gRPC), plain bytes relayed to the instance.
    Grpc,
    /// TLS passed through: the ClientHello is replayed to the instance, which terminates TLS itself.
    Passthrough,
}

impl Mode {
    /// A short lowercase name, used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Terminate => "terminate",
            Mode::Grpc => "grpc",
            Mode::Passthrough => "passthrough",
        }
    }

    /// The port used when the name does not carry one.
    pub fn default_port(self) -> u16 {
        match self {
            Mode::Passthrough => 443,
            Mode::Terminate | Mode::Grpc => 80,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An app or instance id as written in a host name: lowercase hex, [`MIN_ID_LEN`]..=[`MAX_ID_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// Checks and normalises (lowercases) an id.
    pub fn parse(s: &str) -> Result<Self, HostNameError> {
        let s = s.to_ascii_lowercase();
        if !(MIN_ID_LEN..=MAX_ID_LEN).contains(&s.len()) {
            return Err(HostNameError::IdLength { len: s.len() });
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(HostNameError::IdCharacter(c));
        }
        Ok(Id(s))
    }

    /// The id as a lowercase string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a host name routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `gateway.<base>`: the gateway's own attestation endpoint.
    Gateway {
        /// The base domain the name was under.
        base: String,
    },
    /// An app or instance port.
    Target(Target),
}

/// A routed app or instance port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The app or instance id (looked up as an app id first).
    pub id: Id,
    /// The instance port.
    pub port: u16,
    /// Termination, gRPC termination or passthrough.
    pub mode: Mode,
    /// The base domain the name was under.
    pub base: String,
}

/// Why a host name does not route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    /// The name is empty.
    #[error("empty host name")]
    Empty,
    /// The name is not directly under any served base domain.
    #[error("host name {0:?} is not under a served base domain")]
    UnknownBaseDomain(String),
    /// The first label exceeds the DNS limit.
    #[error("first label is {len} characters, at most {MAX_LABEL_LEN} allowed")]
    LabelTooLong {
        /// Its length.
        len: usize,
    },
    /// The `gs` suffix combines gRPC termination with passthrough.
    #[error("suffix \"gs\" is invalid: gRPC (g) is terminated, passthrough (s) is not")]
    GrpcPassthrough,
    /// The id has the wrong length.
    #[error("id is {len} characters, {MIN_ID_LEN} to {MAX_ID_LEN} hex characters allowed")]
    IdLength {
        /// Its length.
        len: usize,
    },
    /// The id has a character that is not hex.
    #[error("id contains {0:?}, only hex digits allowed")]
    IdCharacter(char),
    /// The port is not a decimal number in 1..=65535 without leading zeros.
    #[error("port {0:?} is not a decimal number from 1 to 65535")]
    BadPort(String),
}

/// The set of base domains served, and the parser for names under them.
#[derive(Debug, Clone)]
pub struct HostGrammar {
    /// Lowercase base domains without leading or trailing dots, longest first.
    bases: Vec<String>,
}

impl HostGrammar {
    /// A grammar serving the given base domains (matched case-insensitively).
    pub fn new<I, S>(bases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut bases: Vec<String> = bases
            .into_iter()
            .map(|b| b.as_ref().trim_matches('.').to_ascii_lowercase())
            .filter(|b| !b.is_empty())
            .collect();
        bases.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        bases.dedup();
        HostGrammar { bases }
    }

    /// The served base domains, longest first.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// Parses a host name (an SNI value). A single trailing dot is accepted.
    pub fn parse(&self, name: &str) -> Result<Route, HostNameError> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if name.is_empty() {
            return Err(HostNameError::Empty);
        }
        let (label, base) = self
            .bases
            .iter()
            .find_map(|base| {
                let label = name.strip_suffix(base.as_str())?.strip_suffix('.')?;
                (!label.is_empty() && !label.contains('.')).then_some((label, base))
            })
            .ok_or_else(|| HostNameError::UnknownBaseDomain(name.clone()))?;
        if label.len() > MAX_LABEL_LEN {
            return Err(HostNameError::LabelTooLong { len: label.len() });
        }
        if label == GATEWAY_LABEL {
            return Ok(Route::Gateway { base: base.clone() });
        }
        if label.ends_with("gs") {
            return Err(HostNameError::GrpcPassthrough);
        }
        let (rest, mode) = if let Some(rest) = label.strip_suffix('s') {
            (rest, Mode::Passthrough)
        } else if let Some(rest) = label.strip_suffix('g') {
            (rest, Mode::Grpc)
        } else {
            (label, Mode::Terminate)
        };
        let (id, port) = match rest.split_once('-') {
            Some((id, port)) => (id, parse_port(port)?),
            None => (rest, mode.default_port()),
        };
        Ok(Route::Target(Target {
            id: Id::parse(id)?,
            port,
            mode,
            base: base.clone(),
        }))
    }
}

fn parse_port(s: &str) -> Result<u16, HostNameError> {
    let bad = || HostNameError::BadPort(s.to_owned());
    if s.is_empty() || s.len() > 5 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID32: &str = "deadbeef111111111111111111111111";

    fn grammar() -> HostGrammar {
        HostGrammar::new([
            "dstack-prod5.phala.network",
            "apps.example.org",
            "example.org",
        ])
    }

    fn target(name: &str) -> Target {
        match grammar().parse(name) {
            Ok(Route::Target(t)) => t,
            other => panic!("{name}: expected a target, got {other:?}"),
        }
    }

    #[test]
    fn documented_example_routes_to_port_8080_terminated() {
        let t = target(&format!("{ID32}-8080.dstack-prod5.phala.network"));
        assert_eq!(t.id.as_str(), ID32);
        assert_eq!(t.port, 8080);
        assert_eq!(t.mode, Mode::Terminate);
        assert_eq!(t.base, "dstack-prod5.phala.network");
    }

    #[test]
    fn default_ports_and_suffixes() {
        let t = target(&format!("{ID32}.example.org"));
        assert_eq!((t.port, t.mode), (80, Mode::Terminate));
        let t = target(&format!("{ID32}s.example.org"));
        assert_eq!((t.port, t.mode), (443, Mode::Passthrough));
        let t = target(&format!("{ID32}g.example.org"));
        assert_eq!((t.port, t.mode), (80, Mode::Grpc));
        let t = target(&format!("{ID32}-50051g.example.org"));
        assert_eq!((t.port, t.mode), (50051, Mode::Grpc));
        let t = target(&format!("{ID32}-8443s.example.org"));
        assert_eq!((t.port, t.mode), (8443, Mode::Passthrough));
    }

    #[test]
    fn gs_is_refused() {
        assert_eq!(
            grammar().parse(&format!("{ID32}gs.example.org")),
            Err(HostNameError::GrpcPassthrough)
        );
        assert_eq!(
            grammar().parse(&format!("{ID32}-443gs.example.org")),
            Err(HostNameError::GrpcPassthrough)
        );
        // The other order is not a suffix at all: `s` is left on the port.
        assert!(matches!(
            grammar().parse(&format!("{ID32}-443sg.example.org")),
            Err(HostNameError::BadPort(_))
        ));
    }

    #[test]
    fn names_match_case_insensitively_and_ids_are_lowercased() {
        let t = target(&format!("{}-8080S.Example.ORG.", ID32.to_uppercase()));
        assert_eq!(t.id.as_str(), ID32);
        assert_eq!((t.port, t.mode), (8080, Mode::Passthrough));
        assert_eq!(t.base, "example.org");
    }

    #[test]
    fn id_length_bounds() {
        assert_eq!(target("abcdef01.example.org").id.as_str(), "abcdef01");
        assert_eq!(
            grammar().parse("abcdef0.example.org"),
            Err(HostNameError::IdLength { len: 7 })
        );
        let id40 = "a".repeat(40);
        assert_eq!(target(&format!("{id40}-65535s.example.org")).port, 65535);
        assert_eq!(
            grammar().parse(&format!("{}.example.org", "a".repeat(41))),
            Err(HostNameError::IdLength { len: 41 })
        );
    }

    #[test]
    fn non_hex_ids_are_refused() {
        assert_eq!(
            grammar().parse("deadbeefx1.example.org"),
            Err(HostNameError::IdCharacter('x'))
        );
        assert_eq!(
            grammar().parse("dead_beef1.example.org"),
            Err(HostNameError::IdCharacter('_'))
        );
    }

    #[test]
    fn bad_ports_are_refused() {
        for port in ["", "0", "080", "65536", "99999", "123456", "8o80", "-1"] {
            let name = format!("{ID32}-{port}.example.org");
            assert!(
                matches!(grammar().parse(&name), Err(HostNameError::BadPort(_))),
                "{name} should be refused, got {:?}",
                grammar().parse(&name)
            );
        }
    }

    #[test]
    fn label_limit_is_63() {
        // 40-character id, "-65535" and "s": 47 characters, fine.
        let long = format!("{}-{}", "a".repeat(40), "1".repeat(23));
        assert_eq!(long.len(), 64);
        assert_eq!(
            grammar().parse(&format!("{long}.example.org")),
            Err(HostNameError::LabelTooLong { len: 64 })
        );
    }

    #[test]
    fn gateway_name_is_reserved_under_every_base() {
        assert_eq!(
            grammar().parse("GATEWAY.example.org"),
            Ok(Route::Gateway {
                base: "example.org".into()
            })
        );
        assert_eq!(
            grammar().parse("gateway.dstack-prod5.phala.network"),
            Ok(Route::Gateway {
                base: "dstack-prod5.phala.network".into()
            })
        );
    }

    #[test]
    fn names_outside_the_base_domains_or_deeper_are_refused() {
        for name in [
            "",
            ".",
            "example.org",
            ".example.org",
            "deadbeef11.example.com",
            "deadbeef11.notexample.org",
            "deadbeef11.x.dstack-prod5.phala.network",
            "deadbeef11example.org",
        ] {
            let r = grammar().parse(name);
            assert!(
                matches!(
                    r,
                    Err(HostNameError::UnknownBaseDomain(_)) | Err(HostNameError::Empty)
                ),
                "{name:?} should be refused, got {r:?}"
            );
        }
    }

    #[test]
    fn nested_base_domains_pick_the_one_with_a_single_label() {
        // `apps.example.org` is itself a base; `x.apps.example.org` has one label in front of it.
        let t = target("deadbeef11.apps.example.org");
        assert_eq!(t.base, "apps.example.org");
        // Directly under `example.org`, `apps` is `app` with the passthrough suffix: too short an id.
        assert_eq!(
            grammar().parse("apps.example.org"),
            Err(HostNameError::IdLength { len: 3 })
        );
    }
}
