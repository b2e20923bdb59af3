//! The CA emulator's capacity model, so a load test shows saturation the way a real CA does
//! instead of measuring only our own CPU: issuances are admitted at a configured rate (a GCRA
//! bucket: a burst, then queueing up to a window, then 429 with `Retry-After`), at most
//! `concurrency` are signed at once (the rest wait for a slot), each takes a service time drawn
//! from a log-normal distribution with the configured median and p99, and a configured share
//! fails with 503 (transient, retried by clients).

use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;

use crate::emulator::gcra::{Admission, Bucket};

/// The knobs; everything off by default (an infinitely fast CA).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityConfig {
    /// Issuances per second (`None`: unlimited).
    pub rate: Option<f64>,
    /// How long a request may queue for its slot before it is refused with 429.
    pub queue: Duration,
    /// Signings in progress at once (`None`: unlimited).
    pub concurrency: Option<usize>,
    /// Median and 99th percentile of the service time (zero: none).
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    /// Share of requests that fail with 503, in [0, 1].
    pub error_rate: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            rate: None,
            queue: Duration::from_secs(1),
            concurrency: None,
            latency_p50: Duration::ZERO,
            latency_p99: Duration::ZERO,
            error_rate: 0.0,
        }
    }
}

/// What the model decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 429: come back after this long.
    Throttled(Duration),
    /// 503: an injected transient failure.
    Unavailable,
}

pub struct Capacity {
    config: CapacityConfig,
    bucket: Option<Bucket>,
    slots: Option<Semaphore>,
}

/// The z-score of the 99th percentile of a standard normal distribution.
const Z_99: f64 = 2.326_348;

impl Capacity {
    pub fn new(config: CapacityConfig) -> Self {
        Self {
            bucket: config.rate.map(|r| Bucket::new(r, config.queue)),
            slots: config.concurrency.map(|n| Semaphore::new(n.max(1))),
            config,
        }
    }

    /// Runs `sign` under the model: admission, a concurrency slot, the service time, injected
    /// failures.
    pub async fn serve<T>(&self, sign: impl FnOnce() -> T) -> Result<T, Verdict> {
        if let Some(bucket) = &self.bucket {
            match bucket.admit(tokio::time::Instant::now()) {
                Admission::After(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                Admission::After(_) => {}
                Admission::Refuse(wait) => return Err(Verdict::Throttled(wait)),
            }
        }
        let _slot = match &self.slots {
            Some(s) => Some(s.acquire().await.map_err(|_| Verdict::Unavailable)?),
            None => None,
        };
        let (service, fail) = {
            let mut rng = rand::rng();
            (
                self.service_time(&mut rng),
                rng.random_bool(self.config.error_rate.clamp(0.0, 1.0)),
            )
        };
        if !service.is_zero() {
            tokio::time::sleep(service).await;
        }
        if fail {
            return Err(Verdict::Unavailable);
        }
        Ok(sign())
    }

    /// A log-normal service time with the configured median and p99.
    fn service_time(&self, rng: &mut impl Rng) -> Duration {
        let median = self.config.latency_p50.as_secs_f64();
        if median <= 0.0 {
            return Duration::ZERO;
        }
        let p99 = self.config.latency_p99.as_secs_f64().max(median);
        let sigma = (p99 / median).ln() / Z_99;
        // Box-Muller for a standard normal sample.
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random_range(0.0..1.0);
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64((median * (sigma * z).exp()).min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn service_times_have_the_configured_median_and_p99() {
        let c = Capacity::new(CapacityConfig {
            latency_p50: Duration::from_millis(20),
            latency_p99: Duration::from_millis(200),
            ..CapacityConfig::default()
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut samples: Vec<f64> = (0..20_000)
            .map(|_| c.service_time(&mut rng).as_secs_f64() * 1000.0)
            .collect();
        samples.sort_by(f64::total_cmp);
        let p50 = samples[10_000];
        let p99 = samples[19_800];
        assert!((p50 - 20.0).abs() < 1.5, "p50 {p50}");
        assert!((p99 - 200.0).abs() < 25.0, "p99 {p99}");
    }

    #[tokio::test]
    async fn over_the_rate_requests_queue_then_get_429() {
        let c = Capacity::new(CapacityConfig {
            rate: Some(10.0),
            queue: Duration::from_millis(250),
            ..CapacityConfig::default()
        });
        // 14 at once: 10 in the burst, 2 queue (100 and 200 ms), the rest are refused.
        let all = (0..14).map(|_| c.serve(|| ()));
        let verdicts: Vec<_> = futures_util::future::join_all(all)
            .await
            .into_iter()
            .map(Result::err)
            .collect();
        assert_eq!(
            verdicts.iter().filter(|v| v.is_none()).count(),
            12,
            "{verdicts:?}"
        );
        assert!(
            verdicts
                .iter()
                .all(|v| v.is_none() || matches!(v, Some(Verdict::Throttled(_))))
        );
    }
}
