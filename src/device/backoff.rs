//! Exponential backoff with full jitter (AWS's "full jitter": a uniform delay between zero and the
//! exponential ceiling), which spreads a fleet's retries instead of synchronising them.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_attempts: 8,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32, rng: &mut StdRng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.cap);
        ceiling.mul_f64(rng.random_range(0.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_stay_under_the_growing_ceiling() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(1);
        for attempt in 0..12 {
            let ceiling = (b.base * (1 << attempt)).min(b.cap);
            for _ in 0..50 {
                assert!(b.delay(attempt, &mut rng) <= ceiling);
            }
        }
        let spread: Vec<_> = (0..20).map(|_| b.delay(3, &mut rng)).collect();
        assert!(spread.iter().any(|d| *d != spread[0]), "jitter varies");
    }
}
