//! A GCRA rate limiter with reservations, shared by the emulators' throttles: a request within the
//! burst tolerance passes at once; past it, it is given the next free slot and told how long to
//! wait for it (traffic shaping); when that slot is further away than the shaping window, it is
//! refused and reserves nothing. governor's limiters cannot reserve a future slot, which shaping
//! needs, hence this small bucket.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// What a throttle says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead after waiting this long (zero within the burst).
    After(Duration),
    /// Refuse; the next slot is this far away.
    Refuse(Duration),
}

/// A GCRA bucket: one request per `period`, `tolerance` of burst.
pub struct Bucket {
    period: Duration,
    tolerance: Duration,
    shaping: Duration,
    /// Theoretical arrival time of the next request.
    tat: Mutex<Option<Instant>>,
}

impl Bucket {
    /// `rate` requests per second, a burst of one second's worth (at least one request).
    pub fn new(rate: f64, shaping: Duration) -> Self {
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        let burst = rate.max(1.0);
        Self {
            period,
            tolerance: period.mul_f64(burst - 1.0),
            shaping,
            tat: Mutex::new(None),
        }
    }

    /// `rate` requests per second with a burst of `burst` requests (DPS's "5 polls per 10 s per
    /// device" is 0.5/s with a burst of 5).
    pub fn with_burst(rate: f64, burst: f64, shaping: Duration) -> Self {
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        Self {
            period,
            tolerance: period.mul_f64(burst.max(1.0) - 1.0),
            shaping,
            tat: Mutex::new(None),
        }
    }

    pub fn admit(&self, now: Instant) -> Admission {
        self.admit_weighted(now, 1)
    }

    /// Admits a request that costs `cost` units at once (IoT Hub's direct-method throttle meters
    /// a call in 4 KB units): it waits until the bucket has room for all of them.
    pub fn admit_weighted(&self, now: Instant, cost: u32) -> Admission {
        let cost = cost.max(1);
        let mut tat = lock(&self.tat);
        let t = tat.map_or(now, |t| t.max(now));
        // The last of the `cost` units is the one that must conform.
        let last = t + self.period * (cost - 1);
        let earliest = last.checked_sub(self.tolerance).unwrap_or(now);
        let wait = earliest.saturating_duration_since(now);
        if wait > self.shaping {
            return Admission::Refuse(wait);
        }
        *tat = Some(t + self.period * cost);
        Admission::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_shapes_then_refuses() {
        // 10/s: a burst of 10 passes at once, the next requests wait 100 ms apart, and past a
        // 300 ms shaping window they are refused.
        let b = Bucket::new(10.0, Duration::from_millis(300));
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.admit(now), Admission::After(Duration::ZERO));
        }
        let waits: Vec<_> = (0..3).map(|_| b.admit(now)).collect();
        assert_eq!(
            waits,
            vec![
                Admission::After(Duration::from_millis(100)),
                Admission::After(Duration::from_millis(200)),
                Admission::After(Duration::from_millis(300)),
            ]
        );
        assert!(matches!(b.admit(now), Admission::Refuse(_)));
        // A refusal reserves nothing: a second later there is room again.
        assert!(matches!(
            b.admit(now + Duration::from_secs(1)),
            Admission::After(_)
        ));
    }

    #[test]
    fn a_weighted_request_takes_its_whole_cost() {
        // 10 units/s with a burst of 10: a cost of 4 passes twice, the third waits for 2 units.
        let b = Bucket::new(10.0, Duration::from_millis(300));
        let now = Instant::now();
        assert_eq!(b.admit_weighted(now, 4), Admission::After(Duration::ZERO));
        assert_eq!(b.admit_weighted(now, 4), Admission::After(Duration::ZERO));
        assert_eq!(
            b.admit_weighted(now, 4),
            Admission::After(Duration::from_millis(200))
        );
        assert!(matches!(b.admit_weighted(now, 4), Admission::Refuse(_)));
        let fresh = Bucket::new(1.0, Duration::ZERO);
        assert_eq!(
            fresh.admit_weighted(now, 0),
            Admission::After(Duration::ZERO)
        );
        assert!(
            matches!(fresh.admit(now), Admission::Refuse(_)),
            "a cost of 0 counts as 1"
        );
    }
}
