//! Where a port's connections can go right now: the target's addresses (a fixed IP, a DNS name resolved per
//! connection, or the running containers Docker discovery lists).

use std::net::SocketAddr;

use crate::docker::Discovery;
use crate::target::{Host, Target};

/// Maps targets to the addresses to try.
#[derive(Debug, Clone)]
pub(super) struct Resolver {
    pub(super) discovery: Option<Discovery>,
}

impl Resolver {
    pub(super) async fn resolve(&self, target: &Target, tunnel_port: u16) -> Vec<SocketAddr> {
        match target {
            Target::Address {
                host: Host::Ip(ip),
                port,
            } => vec![SocketAddr::new(*ip, *port)],
            Target::Address {
                host: Host::Name(name),
                port,
            } => match tokio::net::lookup_host((name.as_str(), *port)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "cannot resolve target host");
                    Vec::new()
                }
            },
            _ => match &self.discovery {
                Some(d) => d.candidates(target, tunnel_port),
                None => Vec::new(),
            },
        }
    }
}
