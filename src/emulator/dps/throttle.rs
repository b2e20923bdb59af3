//! DPS's published limits (reference §6, `iot-dps-limits.md`): device registrations 1,000 per
//! minute per service, service operations 1,000 per minute per service, operation-status polls 5
//! per 10 seconds per device. DPS does not shape traffic like IoT Hub: a request over a limit is
//! answered 429 at once, with how long to wait in `retry-after`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::emulator::gcra::{Admission, Bucket};
use crate::sync::lock;

/// Requests per period; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpsLimits {
    /// Registration requests (`iotdps-register`) per minute, for the whole service.
    pub registrations_per_minute: Option<f64>,
    /// Service REST operations (enrolments, registration records) per minute.
    pub operations_per_minute: Option<f64>,
    /// Operation-status polls per 10 seconds, per device.
    pub polls_per_10s: Option<f64>,
}

impl DpsLimits {
    /// The limits DPS publishes.
    pub fn published() -> Self {
        Self {
            registrations_per_minute: Some(1000.0),
            operations_per_minute: Some(1000.0),
            polls_per_10s: Some(5.0),
        }
    }

    pub fn unlimited() -> Self {
        Self {
            registrations_per_minute: None,
            operations_per_minute: None,
            polls_per_10s: None,
        }
    }
}

impl Default for DpsLimits {
    fn default() -> Self {
        Self::published()
    }
}

/// What a throttle says: go ahead, or retry after this long.
pub type Verdict = Result<(), Duration>;

pub(super) struct Throttles {
    registrations: Option<Bucket>,
    operations: Option<Bucket>,
    polls_per_10s: Option<f64>,
    /// One bucket per registration id; bounded by the number of devices, like the records.
    polls: Mutex<HashMap<String, Bucket>>,
    pub(super) throttled: AtomicU64,
}

/// A per-minute limit with a burst of one second's worth (at least one request), as DPS's
/// per-minute meters let a short burst through.
fn per_minute(limit: Option<f64>) -> Option<Bucket> {
    limit.map(|n| Bucket::new(n / 60.0, Duration::ZERO))
}

impl Throttles {
    pub(super) fn new(limits: DpsLimits) -> Self {
        Self {
            registrations: per_minute(limits.registrations_per_minute),
            operations: per_minute(limits.operations_per_minute),
            polls_per_10s: limits.polls_per_10s,
            polls: Mutex::new(HashMap::new()),
            throttled: AtomicU64::new(0),
        }
    }

    fn verdict(&self, admission: Admission) -> Verdict {
        match admission {
            Admission::After(_) => Ok(()),
            Admission::Refuse(wait) => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                Err(wait)
            }
        }
    }

    pub(super) fn register(&self) -> Verdict {
        match &self.registrations {
            Some(b) => self.verdict(b.admit(Instant::now())),
            None => Ok(()),
        }
    }

    pub(super) fn operation(&self) -> Verdict {
        match &self.operations {
            Some(b) => self.verdict(b.admit(Instant::now())),
            None => Ok(()),
        }
    }

    pub(super) fn poll(&self, registration_id: &str) -> Verdict {
        let Some(per_10s) = self.polls_per_10s else {
            return Ok(());
        };
        let admission = {
            let mut polls = lock(&self.polls);
            polls
                .entry(registration_id.to_string())
                .or_insert_with(|| Bucket::with_burst(per_10s / 10.0, per_10s, Duration::ZERO))
                .admit(Instant::now())
        };
        self.verdict(admission)
    }
}

/// `retry-after` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn polls_are_limited_per_device() {
        let t = Throttles::new(DpsLimits::published());
        for _ in 0..5 {
            assert_eq!(t.poll("a"), Ok(()));
        }
        let wait = t.poll("a").unwrap_err();
        assert!(wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2));
        assert_eq!(retry_after_secs(wait), 2);
        assert_eq!(t.poll("b"), Ok(()), "another device has its own budget");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.poll("a"), Ok(()));
        assert_eq!(t.throttled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unlimited_never_refuses() {
        let t = Throttles::new(DpsLimits::unlimited());
        assert!((0..10_000).all(|_| t.register().is_ok() && t.poll("a").is_ok()));
    }
}
