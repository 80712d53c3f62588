//! Per-source request rate limiting: one token bucket per IP address, at most [`MAX_TRACKED`] addresses at once.
//!
//! When a new address arrives with the map full, buckets that have refilled are forgotten (forgetting them changes
//! nothing: a new bucket starts full); if none has, the bucket used longest ago is evicted, so that many sources
//! cannot grow the map without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most source addresses tracked at once by default.
pub const MAX_TRACKED: usize = 10_000;

/// Token buckets keyed by source address.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    capacity: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_sec` sustained requests per second and `burst` extra requests per source.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            capacity: MAX_TRACKED,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Tracks at most `capacity` source addresses (at least one) instead of [`MAX_TRACKED`].
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many source addresses are tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes one token for `source`; on refusal, how long until one is available.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= self.capacity && !buckets.contains_key(&source) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_sec < burst
            });
            // Every tracked source is still draining its bucket: forget the one seen longest ago.
            while buckets.len() >= self.capacity {
                let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, b)| b.updated)
                    .map(|(a, _)| *a)
                else {
                    break;
                };
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_sec,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate_per_source() {
        let limiter = RateLimiter::new(10, 5);
        let t0 = Instant::now();
        let a: IpAddr = "198.18.0.3".parse().unwrap();
        let b: IpAddr = "198.18.0.4".parse().unwrap();
        for _ in 0..5 {
            limiter.check(a, t0).unwrap();
        }
        let wait = limiter.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        limiter.check(b, t0).unwrap();
        limiter.check(a, t0 + Duration::from_millis(100)).unwrap();
        assert!(limiter.check(a, t0 + Duration::from_millis(100)).is_err());
    }

    fn source(i: u32) -> IpAddr {
        IpAddr::V6(std::net::Ipv6Addr::from(
            0x2001_0db8_u128 << 96 | u128::from(i),
        ))
    }

    #[test]
    fn many_sources_never_grow_the_map_past_its_capacity() {
        // Each source empties its bucket (no refill at 1 per second within the test's clock), so none is forgotten
        // for having refilled: only eviction keeps the map bounded.
        let limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 5_000) {
            let _ = limiter.check(source(i), t0 + Duration::from_micros(u64::from(i)));
            assert!(limiter.tracked() <= MAX_TRACKED);
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
    }

    #[test]
    fn the_source_seen_longest_ago_is_evicted_first() {
        let limiter = RateLimiter::new(1, 1).with_capacity(3);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        for (i, ms) in [(1, 0), (2, 10), (3, 20)] {
            limiter.check(source(i), at(ms)).unwrap();
        }
        // Source 1 is used again, so source 2 is now the one seen longest ago.
        assert!(limiter.check(source(1), at(30)).is_err());
        limiter.check(source(4), at(40)).unwrap();
        assert_eq!(limiter.tracked(), 3);
        // Sources 1 and 3 are still limited (their buckets were kept); source 2 starts afresh.
        assert!(limiter.check(source(1), at(50)).is_err());
        assert!(limiter.check(source(3), at(50)).is_err());
        limiter.check(source(2), at(50)).unwrap();
    }
}
