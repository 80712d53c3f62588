//! Names in `gateway.toml` that have rules of their own: base domains and the public WireGuard endpoint. Both
//! deserialize from strings and refuse bad values while parsing, with the file's line and column.

use std::fmt;
use std::net::SocketAddr;

/// A string newtype that holds only values `check` accepts: built with `new` or, when deserializing, from a string
/// (the error quotes the value and says what is wrong with it).
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value`.
            pub fn new(value: &str) -> Result<Self, &'static str> {
                $check(value).map(|()| Self(value.to_owned()))
            }

            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                $check(&value)
                    .map_err(|why| format!("{value:?} {why}"))
                    .map(|()| Self(value))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// A DNS name apps are served under: 1 to 253 bytes of dot-separated labels of letters, digits and inner
    /// hyphens, each 1 to 63 bytes, no leading or trailing dot.
    DomainName,
    check_domain
);

checked_string!(
    /// Where agents send WireGuard packets: `IP:PORT` or `HOST:PORT` with a valid DNS host and a non-zero port.
    PublicEndpoint,
    check_endpoint
);

fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() || domain.len() > 253 {
        return Err("is not a valid domain name length");
    }
    if domain.ends_with('.') || domain.starts_with('.') {
        return Err("must not start or end with a dot");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or over-long label");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err("has a label with characters other than letters, digits and inner hyphens");
        }
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    if endpoint.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err("must be host:port");
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("has no valid port"),
        Ok(_) => {}
    }
    check_domain(host).map_err(|_| "has an invalid host")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for good in ["apps.example.com", "a", "x-1.y"] {
            assert_eq!(
                DomainName::new(good).map(|d| d.to_string()),
                Ok(good.into())
            );
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "-a.b",
            "a-.b",
            "bad domain",
            &"a".repeat(64),
        ] {
            assert!(DomainName::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        let e = DomainName::try_from("bad domain".to_string()).unwrap_err();
        assert!(e.starts_with("\"bad domain\" has a label"), "{e}");
    }

    #[test]
    fn endpoints() {
        for good in ["198.18.0.2:51820", "[::1]:51820", "gw.example.com:51820"] {
            assert!(PublicEndpoint::try_from(good.to_string()).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("nowhere", "must be host:port"),
            ("gw.example.com:0", "has no valid port"),
            ("gw.example.com:x", "has no valid port"),
            ("bad host:1", "has an invalid host"),
        ] {
            let e = PublicEndpoint::try_from(bad.to_string()).unwrap_err();
            assert!(e.ends_with(why), "{bad}: {e}");
        }
    }
}
