//! What every accept loop shares: which accept errors a listener waits out and which mean its socket is gone,
//! the per-source connection limit, and the count of connections closed at accept.
//!
//! `accept(2)` fails for two kinds of reasons. Some concern one connection or a passing shortage (the connection
//! was reset before it was accepted, the process is out of descriptors or memory, a firewall refused it); the
//! listener keeps working and tries again after [`RETRY_AFTER`]. Others mean the listening socket itself is
//! unusable (it was closed or shut down, or is no listening socket at all); retrying would spin for ever on a
//! listener that never accepts again, so the accept loop ends and reports the error, and whoever supervises it
//! stops the process.
//!
//! **Per-source limit.** One source must not hold every connection a listener serves. [`SourceLimits`] counts the
//! open connections of each source (an IPv4 address, or an IPv6 /64, which one host usually has whole) and hands
//! out a [`SourceSlot`] per connection, held for the connection's life; a connection beyond the limit is closed
//! at once, before any byte is read, and counted in [`closed_at_accept`] by listener and reason.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long an accept loop waits after a transient error before it tries again (instead of spinning, for
/// example while out of descriptors).
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(50);

/// Whether `error`, returned by `accept`, means the listening socket can never accept again.
pub(crate) fn is_fatal(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT)
    )
}

/// The key a source is counted under: IPv4 addresses (also IPv4-mapped IPv6) whole, IPv6 by their /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per source, at most `max` each (see the module documentation).
#[derive(Debug)]
pub struct SourceLimits {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl SourceLimits {
    /// A limit of `max` open connections per source (at least 1).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection from `ip`, or None if its source is at the limit.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            limits: self.clone(),
            key,
        })
    }

    /// The open connections of `ip`'s source.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&source_key(ip)).copied().unwrap_or(0)
    }

    /// How many sources have a connection open (the map holds no others).
    pub fn sources(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One connection's place under its source's limit; dropping it frees the place.
#[derive(Debug)]
pub struct SourceSlot {
    limits: Arc<SourceLimits>,
    key: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Which listener closed a connection at accept: the `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListenerKind {
    /// The control listener (registration).
    Control,
    /// A client (proxy) listener.
    Client,
}

impl ListenerKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Client => "client",
        }
    }
}

/// Why a connection was closed at accept: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClosedReason {
    /// Its source already had the most connections allowed per source.
    PerSourceLimit,
    /// The listener already had the most connections it serves.
    ListenerLimit,
}

impl ClosedReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerSourceLimit => "per_source_limit",
            Self::ListenerLimit => "listener_limit",
        }
    }
}

/// Connections closed at accept, by listener and reason; one set per process, as the listeners are.
#[derive(Debug, Default)]
pub struct ClosedAtAccept {
    counts: Mutex<BTreeMap<(ListenerKind, ClosedReason), u64>>,
}

impl ClosedAtAccept {
    /// Counts one closed connection.
    pub fn count(&self, listener: ListenerKind, reason: ClosedReason) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((listener, reason)).or_insert(0) += 1;
    }

    /// The count for one listener and reason.
    pub fn get(&self, listener: ListenerKind, reason: ClosedReason) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&(listener, reason)).copied().unwrap_or(0)
    }

    /// Appends `tee_gateway_connections_closed_at_accept_total` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP tee_gateway_connections_closed_at_accept_total Connections closed as soon as they were \
             accepted, by listener and reason.\n",
        );
        out.push_str("# TYPE tee_gateway_connections_closed_at_accept_total counter\n");
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for ((listener, reason), n) in counts.iter() {
            let _ = writeln!(
                out,
                "tee_gateway_connections_closed_at_accept_total{{listener=\"{}\",reason=\"{}\"}} {n}",
                listener.as_str(),
                reason.as_str()
            );
        }
    }
}

/// The process's count of connections closed at accept.
pub fn closed_at_accept() -> &'static ClosedAtAccept {
    static CLOSED: OnceLock<ClosedAtAccept> = OnceLock::new();
    CLOSED.get_or_init(ClosedAtAccept::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_limited_each_and_slots_free_on_drop() {
        let limits = SourceLimits::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = limits.try_acquire(a).unwrap();
        let _two = limits.try_acquire(a).unwrap();
        assert!(limits.try_acquire(a).is_none());
        // IPv4-mapped IPv6 is the same source.
        assert!(limits
            .try_acquire("::ffff:192.0.2.1".parse().unwrap())
            .is_none());
        let _other = limits.try_acquire(b).unwrap();
        assert_eq!(limits.open(a), 2);
        drop(one);
        assert_eq!(limits.open(a), 1);
        let _three = limits.try_acquire(a).unwrap();
        assert_eq!(limits.sources(), 2);
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let limits = SourceLimits::new(1);
        let _slot = limits
            .try_acquire("2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        assert!(limits
            .try_acquire("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_none());
        let other = limits.try_acquire("2001:db8:1:3::1".parse().unwrap());
        assert!(other.is_some());
        drop(other);
        drop(_slot);
        assert_eq!(
            limits.sources(),
            0,
            "a source without connections is forgotten"
        );
    }

    #[test]
    fn closed_connections_render_by_listener_and_reason() {
        let closed = ClosedAtAccept::default();
        closed.count(ListenerKind::Control, ClosedReason::PerSourceLimit);
        closed.count(ListenerKind::Control, ClosedReason::PerSourceLimit);
        closed.count(ListenerKind::Client, ClosedReason::PerSourceLimit);
        let mut out = String::new();
        closed.render(&mut out);
        assert!(out.contains(
            "tee_gateway_connections_closed_at_accept_total{listener=\"control\",reason=\"per_source_limit\"} 2\n"
        ), "{out}");
        assert!(out.contains(
            "tee_gateway_connections_closed_at_accept_total{listener=\"client\",reason=\"per_source_limit\"} 1\n"
        ), "{out}");
        assert_eq!(
            closed.get(ListenerKind::Control, ClosedReason::ListenerLimit),
            0
        );
    }

    #[test]
    fn a_closed_or_shut_down_socket_is_fatal_and_shortages_are_not() {
        for fatal in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK] {
            assert!(is_fatal(&io::Error::from_raw_os_error(fatal)), "{fatal}");
        }
        for transient in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::ECONNABORTED,
            libc::EPERM,
            libc::EINTR,
            libc::EOPNOTSUPP,
        ] {
            assert!(
                !is_fatal(&io::Error::from_raw_os_error(transient)),
                "{transient}"
            );
        }
        assert!(!is_fatal(&io::Error::other("no errno")));
    }
}
