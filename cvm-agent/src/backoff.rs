//! Exponential backoff with jitter for registration retries.

use std::time::Duration;

/// Delays that double after each failure up to a cap, each randomised to between half and all of its nominal
/// value, so many agents that lost the gateway at once do not return in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The delay before the next attempt; doubles the nominal delay for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_jitters_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let nominal = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, n) in delays.iter().zip(nominal) {
            assert!(
                *d >= Duration::from_millis(n / 2) && *d <= Duration::from_millis(n),
                "{d:?} vs {n}"
            );
        }
        let many: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(many.len() > 10, "jitter spreads delays");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
