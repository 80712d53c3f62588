//! Prometheus metrics of the data plane, rendered in the text exposition format.
//!
//! Counters: connections by app and mode, refusals by reason, bytes by direction. Histograms: TLS handshake
//! and upstream connect latency. Gauges (filled in at scrape time by the caller): live connections per app and
//! per-instance health.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::relay::ByteCounters;

/// Bucket upper bounds in seconds for the latency histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, c) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, c) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Health of one instance at scrape time.
#[derive(Debug, Clone)]
pub struct InstanceHealth {
    /// The app.
    pub app_id: String,
    /// The instance.
    pub instance_id: String,
    /// Healthy (recent handshake) or not.
    pub healthy: bool,
    /// Drained by an operator.
    pub drained: bool,
    /// Seconds since its last handshake, if any.
    pub since_handshake_secs: Option<u64>,
}

/// The data plane's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: Mutex<BTreeMap<(String, &'static str), u64>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// TLS handshake latency of terminated routes.
    pub handshake: Histogram,
    /// Upstream connect latency.
    pub connect: Histogram,
    /// Bytes relayed.
    pub bytes: ByteCounters,
    /// Bytes relayed by `splice(2)` on passthrough routes (included in `bytes`).
    pub spliced: AtomicU64,
}

impl Metrics {
    /// Counts a routed connection.
    pub fn connection(&self, app: &str, mode: &'static str) {
        *self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((app.to_owned(), mode))
            .or_insert(0) += 1;
    }

    /// Counts a refused connection.
    pub fn refusal(&self, reason: &'static str) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_insert(0) += 1;
    }

    /// The refusal count for one reason.
    pub fn refusals(&self, reason: &str) -> u64 {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Renders every metric; `active` and `health` are the gauges sampled by the caller.
    pub fn render(&self, active: &BTreeMap<String, usize>, health: &[InstanceHealth]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP tee_gateway_connections_total Client connections routed, by app and mode.\n",
        );
        out.push_str("# TYPE tee_gateway_connections_total counter\n");
        for ((app, mode), n) in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "tee_gateway_connections_total{{app=\"{app}\",mode=\"{mode}\"}} {n}"
            );
        }
        out.push_str("# HELP tee_gateway_refusals_total Client connections refused, by reason.\n");
        out.push_str("# TYPE tee_gateway_refusals_total counter\n");
        for (reason, n) in self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "tee_gateway_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP tee_gateway_active_connections Open client connections, by app.\n");
        out.push_str("# TYPE tee_gateway_active_connections gauge\n");
        for (app, n) in active {
            let _ = writeln!(out, "tee_gateway_active_connections{{app=\"{app}\"}} {n}");
        }
        out.push_str("# HELP tee_gateway_bytes_total Bytes relayed, by direction.\n");
        out.push_str("# TYPE tee_gateway_bytes_total counter\n");
        let _ = writeln!(
            out,
            "tee_gateway_bytes_total{{direction=\"to_instance\"}} {}",
            self.bytes.to_upstream.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "tee_gateway_bytes_total{{direction=\"to_client\"}} {}",
            self.bytes.to_client.load(Ordering::Relaxed)
        );
        out.push_str("# HELP tee_gateway_spliced_bytes_total Bytes of passthrough routes relayed by splice(2), part of tee_gateway_bytes_total.\n");
        out.push_str("# TYPE tee_gateway_spliced_bytes_total counter\n");
        let _ = writeln!(
            out,
            "tee_gateway_spliced_bytes_total {}",
            self.spliced.load(Ordering::Relaxed)
        );
        out.push_str("# HELP tee_gateway_tls_handshake_seconds TLS handshake latency of terminated routes.\n");
        out.push_str("# TYPE tee_gateway_tls_handshake_seconds histogram\n");
        self.handshake
            .render(&mut out, "tee_gateway_tls_handshake_seconds", "");
        out.push_str(
            "# HELP tee_gateway_upstream_connect_seconds Time to connect to an instance.\n",
        );
        out.push_str("# TYPE tee_gateway_upstream_connect_seconds histogram\n");
        self.connect
            .render(&mut out, "tee_gateway_upstream_connect_seconds", "");
        instance_gauge(
            &mut out,
            "tee_gateway_instance_healthy",
            "1 if the instance's tunnel handshake is recent.",
            health,
            |h| h.healthy,
        );
        instance_gauge(
            &mut out,
            "tee_gateway_instance_drained",
            "1 if the instance is drained.",
            health,
            |h| h.drained,
        );
        out
    }
}

/// Writes the per-instance 0/1 gauge `name` of `flag`.
fn instance_gauge(
    out: &mut String,
    name: &str,
    help: &str,
    health: &[InstanceHealth],
    flag: impl Fn(&InstanceHealth) -> bool,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for h in health {
        let _ = writeln!(
            out,
            "{name}{{app=\"{}\",instance=\"{}\"}} {}",
            h.app_id,
            h.instance_id,
            u8::from(flag(h))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.connection("aaaaaaaa", "terminate");
        m.connection("aaaaaaaa", "terminate");
        m.refusal("unknown_id");
        m.handshake.observe(Duration::from_millis(3));
        let active = BTreeMap::from([("aaaaaaaa".to_string(), 2usize)]);
        let health = vec![InstanceHealth {
            app_id: "aaaaaaaa".into(),
            instance_id: "bbbbbbbb".into(),
            healthy: true,
            drained: false,
            since_handshake_secs: Some(3),
        }];
        let text = m.render(&active, &health);
        assert!(
            text.contains("tee_gateway_connections_total{app=\"aaaaaaaa\",mode=\"terminate\"} 2")
        );
        assert!(text.contains("tee_gateway_refusals_total{reason=\"unknown_id\"} 1"));
        assert!(text.contains("tee_gateway_tls_handshake_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("tee_gateway_tls_handshake_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("tee_gateway_tls_handshake_seconds_count 1"));
        assert!(text.contains("tee_gateway_active_connections{app=\"aaaaaaaa\"} 2"));
        assert!(
            text.contains("tee_gateway_instance_healthy{app=\"aaaaaaaa\",instance=\"bbbbbbbb\"} 1")
        );
        assert_eq!(m.refusals("unknown_id"), 1);
    }
}
