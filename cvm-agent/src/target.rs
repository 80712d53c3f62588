//! Where the agent sends the connections that arrive on one declared port.
//!
//! Grammar of a target (one per port in `agent.toml`):
//! - `docker:SERVICE:PORT`: a running container of the Docker Compose service SERVICE (label
//!   `com.docker.compose.service=SERVICE`) or carrying `tee-gateway.service=SERVICE`, on PORT of its address in
//!   its Docker network;
//! - `docker-label`: the running container labelled `tee-gateway.port=<tunnel port>[:<container port>]` (the
//!   container port defaults to the tunnel port);
//! - `HOST:PORT`: a fixed address; HOST is an IPv4 address, a bracketed IPv6 address or a DNS name.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Label naming the Compose service of a container (set by Docker Compose).
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";
/// Label naming the service of a container started without Compose.
pub const SERVICE_LABEL: &str = "tee-gateway.service";
/// Label binding a container to a tunnel port: `<tunnel port>[:<container port>]`.
pub const PORT_LABEL: &str = "tee-gateway.port";

/// The destination of one declared port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// Containers of a Compose service (or with `tee-gateway.service`), on a container port.
    DockerService {
        /// The service name.
        service: String,
        /// The port inside the container.
        port: u16,
    },
    /// The container labelled `tee-gateway.port=<tunnel port>[:<container port>]`.
    DockerLabel,
    /// A fixed host and port.
    Address {
        /// An IP address or a DNS name.
        host: Host,
        /// The port.
        port: u16,
    },
}

/// The host part of a fixed address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A literal IP address.
    Ip(IpAddr),
    /// A DNS name, resolved at each connection.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Why a target string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetParseError {
    /// The string is empty.
    #[error("empty target (expected `docker:SERVICE:PORT`, `docker-label` or `HOST:PORT`)")]
    Empty,
    /// `docker:` without a service or port.
    #[error("`{0}`: expected `docker:SERVICE:PORT`")]
    DockerShape(String),
    /// A service name with characters Docker Compose does not allow.
    #[error("`{0}`: service names use letters, digits, `.`, `_` and `-`, and start with a letter or digit")]
    ServiceName(String),
    /// A port that is not a number in 1..=65535.
    #[error("`{0}`: port must be a number from 1 to 65535")]
    Port(String),
    /// No `:PORT` after the host.
    #[error("`{0}`: expected `HOST:PORT` (write IPv6 addresses as `[ADDR]:PORT`)")]
    AddressShape(String),
    /// A host that is neither an IP address nor a DNS name.
    #[error("`{0}`: host is neither an IP address nor a DNS name")]
    HostName(String),
}

/// Parses a port in 1..=65535.
pub fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

fn valid_service(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn valid_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for Target {
    type Err = TargetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TargetParseError::Empty);
        }
        if s == "docker-label" {
            return Ok(Target::DockerLabel);
        }
        if let Some(rest) = s.strip_prefix("docker:") {
            let (service, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| TargetParseError::DockerShape(s.to_owned()))?;
            if !valid_service(service) {
                return Err(TargetParseError::ServiceName(s.to_owned()));
            }
            let port = parse_port(port).ok_or_else(|| TargetParseError::Port(s.to_owned()))?;
            return Ok(Target::DockerService {
                service: service.to_owned(),
                port,
            });
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (ip, port) = rest
                .split_once("]:")
                .ok_or_else(|| TargetParseError::AddressShape(s.to_owned()))?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| TargetParseError::HostName(s.to_owned()))?;
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| TargetParseError::AddressShape(s.to_owned()))?;
            if host.contains(':') {
                return Err(TargetParseError::AddressShape(s.to_owned()));
            }
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => Host::Ip(ip),
                Err(_)
                    if valid_dns_name(host)
                        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
                {
                    Host::Name(host.to_ascii_lowercase())
                }
                Err(_) => return Err(TargetParseError::HostName(s.to_owned())),
            };
            (host, port)
        };
        let port = parse_port(port).ok_or_else(|| TargetParseError::Port(s.to_owned()))?;
        Ok(Target::Address { host, port })
    }
}

impl TryFrom<String> for Target {
    type Error = TargetParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Target> for String {
    fn from(t: Target) -> Self {
        t.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::DockerService { service, port } => write!(f, "docker:{service}:{port}"),
            Target::DockerLabel => f.write_str("docker-label"),
            Target::Address { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Parses the value of a `tee-gateway.port` label: `<tunnel port>[:<container port>]`.
/// Returns the tunnel port and the container port.
pub fn parse_port_label(value: &str) -> Option<(u16, u16)> {
    match value.trim().split_once(':') {
        None => parse_port(value.trim()).map(|p| (p, p)),
        Some((tunnel, container)) => Some((parse_port(tunnel)?, parse_port(container)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Target {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_service() {
        assert_eq!(
            ok("docker:web:8080"),
            Target::DockerService {
                service: "web".into(),
                port: 8080
            }
        );
        assert_eq!(
            ok("docker:my_app.api-2:1"),
            Target::DockerService {
                service: "my_app.api-2".into(),
                port: 1
            }
        );
    }

    /// An input and the constructor of the error it must be refused with (given the input).
    type Refusal = (&'static str, fn(String) -> TargetParseError);

    /// Each input is refused with the error its constructor makes of the input.
    fn refused(cases: &[Refusal]) {
        for (input, error) in cases {
            assert_eq!(
                input.parse::<Target>(),
                Err(error(input.to_string())),
                "{input}"
            );
        }
    }

    #[test]
    fn docker_service_and_address_errors() {
        let cases: [Refusal; 15] = [
            ("docker:", TargetParseError::DockerShape),
            ("docker:web", TargetParseError::DockerShape),
            ("docker::80", TargetParseError::ServiceName),
            ("docker:-web:80", TargetParseError::ServiceName),
            ("docker:w/b:80", TargetParseError::ServiceName),
            ("docker:web:0", TargetParseError::Port),
            ("docker:web:65536", TargetParseError::Port),
            ("docker:web:+80", TargetParseError::Port),
            ("localhost", TargetParseError::AddressShape),
            ("::1:80", TargetParseError::AddressShape),
            ("[::1]80", TargetParseError::AddressShape),
            ("[nope]:80", TargetParseError::HostName),
            ("300.1.1.1:80", TargetParseError::HostName),
            ("a b:80", TargetParseError::HostName),
            ("host:http", TargetParseError::Port),
        ];
        refused(&cases);
        assert_eq!("".parse::<Target>(), Err(TargetParseError::Empty));
    }

    #[test]
    fn docker_label_and_addresses() {
        assert_eq!(ok("docker-label"), Target::DockerLabel);
        assert_eq!(
            ok("127.0.0.1:9000"),
            Target::Address {
                host: Host::Ip("127.0.0.1".parse().unwrap()),
                port: 9000
            }
        );
        assert_eq!(
            ok("[::1]:443"),
            Target::Address {
                host: Host::Ip("::1".parse().unwrap()),
                port: 443
            }
        );
        assert_eq!(
            ok("Backend.internal:80"),
            Target::Address {
                host: Host::Name("backend.internal".into()),
                port: 80
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "docker:web:8080",
            "docker-label",
            "10.0.0.2:80",
            "[fd00::1]:8443",
            "svc.local:1",
        ] {
            assert_eq!(ok(s).to_string(), s);
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        #[derive(Deserialize)]
        struct P {
            target: Target,
        }
        let p: P = toml::from_str("target = \"docker:web:80\"").unwrap();
        assert_eq!(p.target.to_string(), "docker:web:80");
        assert!(toml::from_str::<P>("target = \"docker:web\"").is_err());
    }

    #[test]
    fn port_labels() {
        assert_eq!(parse_port_label("80"), Some((80, 80)));
        assert_eq!(parse_port_label("80:8080"), Some((80, 8080)));
        assert_eq!(parse_port_label("80:"), None);
        assert_eq!(parse_port_label("x"), None);
        assert_eq!(parse_port_label("0:80"), None);
    }
}
