//! Exponential backoff with jitter for registration retries and Docker engine reconnects.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Delays that double after each failure up to a cap, each randomised to between half and all of its nominal
/// value, so many agents that lost the gateway at once do not return in lockstep.
///
/// The jitter comes from a random generator owned by the backoff: seeded from the operating system by
/// [`Backoff::new`], or from a fixed seed by [`Backoff::seeded`] so a test sees the same delays on every run.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: StdRng,
}

impl Backoff {
    /// Starts at `initial`, never above `max`, with jitter from the operating system's randomness.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, StdRng::from_entropy())
    }

    /// Like [`Backoff::new`], with the jitter drawn from a generator seeded with `seed` (reproducible delays).
    pub fn seeded(initial: Duration, max: Duration, seed: u64) -> Self {
        Self::with_rng(initial, max, StdRng::seed_from_u64(seed))
    }

    fn with_rng(initial: Duration, max: Duration, rng: StdRng) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
            rng,
        }
    }

    /// The delay before the next attempt; doubles the nominal delay for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(self.rng.gen::<f64>())
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

    #[test]
    fn a_seed_gives_the_same_delays() {
        let delays = |seed| {
            let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(8), seed);
            (0..6).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
        assert_ne!(delays(7), delays(8));
    }
}
