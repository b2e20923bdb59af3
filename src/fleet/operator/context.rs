//! What the operator's tasks share ([`Context`]): the service client, the fleet's gate and
//! recorder, the counts for the report, the run's stop signal; and what each of them does the
//! same way: find its devices ([`Targets`]), pace its calls (the event's rate, the fleet's
//! limits), retry a call the hub throttled ([`Context::call`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::gate::TrafficClass;
use crate::fleet::target::{C2dTarget, FleetServices};
use crate::iothub::service::{CallError, ServiceClient};
use crate::metrics::{Outcome, Phase, Recorder};
use crate::report::operator::OperatorReport;

/// How often a throttled call is tried in all, and how long it waits when the hub gives no
/// `Retry-After`.
pub const MAX_TRIES: u32 = 4;
const THROTTLED_WAIT: Duration = Duration::from_secs(1);

/// The most calls of one event in flight at once.
pub const MAX_IN_FLIGHT: usize = 1000;

pub struct Context {
    pub client: Arc<ServiceClient>,
    /// The C2D sender's target (none: `c2d` events count every message as an error).
    pub c2d: Option<C2dTarget>,
    pub services: Arc<FleetServices>,
    pub report: Mutex<OperatorReport>,
    pub stop: CancellationToken,
    /// This shard's share of an event's rate (1/n of it with n shards).
    pub rate_share: f64,
}

/// The devices an event goes to: chosen by the fleet, or those a query returns (of the devices
/// this process started, so shards do not overlap).
pub enum Targets {
    Devices(Vec<String>),
    Query { text: String, own: HashSet<String> },
}

/// A call's result once retries are over, and how many of its tries the hub throttled.
pub struct Attempted<T> {
    pub result: Result<T, CallError>,
    pub throttled: u64,
}

impl Context {
    pub fn recorder(&self) -> &Recorder {
        &self.services.recorder
    }

    /// When the `i`th call of an event that started at `start` with `rate` is due.
    pub fn slot(&self, start: Instant, rate: Option<f64>, i: usize) -> Instant {
        slot(start, rate.map(|r| r * self.rate_share), i)
    }

    /// Waits until `at`, then for the fleet's limit of `class`. Returns when the call is due:
    /// `at`, or when the limit let it through if it had to wait (the wait is `limit.*`'s, so a
    /// limit never shows as the hub's latency); `None` if the run stopped.
    pub async fn wait_turn(&self, at: Instant, class: Option<TrafficClass>) -> Option<Instant> {
        tokio::select! {
            _ = self.stop.cancelled() => return None,
            _ = tokio::time::sleep_until(at) => {}
        }
        let Some(class) = class else {
            return Some(at);
        };
        let waited = tokio::select! {
            _ = self.stop.cancelled() => return None,
            w = self.services.gate.wait(class, self.recorder()) => w,
        };
        Some(match waited {
            true => Instant::now(),
            false => at,
        })
    }

    /// The device ids of `targets`: a query is run (and timed as `registry.query`).
    pub async fn resolve(&self, targets: Targets) -> Option<Vec<String>> {
        let (text, own) = match targets {
            Targets::Devices(ids) => return Some(ids),
            Targets::Query { text, own } => (text, own),
        };
        let started = Instant::now();
        let attempted = self
            .call(Phase::RegistryQuery, started, None, 1, || {
                self.client.query_all(&text, None)
            })
            .await?;
        match attempted.result {
            Ok(result) => {
                self.recorder()
                    .record(Phase::RegistryQuery, Outcome::Ok, started, Instant::now());
                let mut ids = result.device_ids();
                ids.retain(|id| own.contains(id));
                Some(ids)
            }
            Err(e) => {
                tracing::warn!(query = %text, error = %e, "the query choosing an event's devices failed");
                Some(Vec::new())
            }
        }
    }

    /// Runs `op` (timed as `phase` from `intended`), trying again while the hub throttles it,
    /// up to `tries` in all, each try through the fleet's limit of `class`. A failure is
    /// recorded (each throttled try from its own start, the last failure from `intended`);
    /// success is left to the caller, whose operation may not be over (`twin.desired` waits for
    /// the device). `None` when the run stopped.
    pub async fn call<T, F, Fut>(
        &self,
        phase: Phase,
        intended: Instant,
        class: Option<TrafficClass>,
        tries: u32,
        mut op: F,
    ) -> Option<Attempted<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let recorder = self.recorder();
        let mut throttled = 0;
        loop {
            let began = Instant::now();
            let result = tokio::select! {
                _ = self.stop.cancelled() => return None,
                r = op() => r,
            };
            let end = Instant::now();
            let e = match result {
                Ok(v) => {
                    return Some(Attempted {
                        result: Ok(v),
                        throttled,
                    });
                }
                Err(e) => e,
            };
            recorder.error(phase, &e.kind());
            let retry =
                matches!(e, CallError::Throttled { .. }) && throttled + 1 < u64::from(tries);
            if matches!(e, CallError::Throttled { .. }) {
                throttled += 1;
            }
            if !retry {
                recorder.record(phase, e.outcome(), intended, end);
                return Some(Attempted {
                    result: Err(e),
                    throttled,
                });
            }
            recorder.record(phase, e.outcome(), began, end);
            let wait = e.retry_after().unwrap_or(THROTTLED_WAIT);
            self.wait_turn(Instant::now() + wait, class).await?;
        }
    }
}

/// The `i`th call at `rate` per second from `start` (all at `start` without one).
fn slot(start: Instant, rate: Option<f64>, i: usize) -> Instant {
    match rate {
        Some(r) if r.is_finite() && r > 0.0 => start + Duration::from_secs_f64(i as f64 / r),
        _ => start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_rate() {
        let start = Instant::now();
        assert_eq!(
            slot(start, Some(10.0), 5) - start,
            Duration::from_millis(500)
        );
        assert_eq!(slot(start, None, 5), start);
        assert_eq!(slot(start, Some(0.0), 5), start);
        assert_eq!(slot(start, Some(f64::NAN), 5), start);
    }
}
