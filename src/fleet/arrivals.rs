//! When each device starts.
//!
//! **Open model.** The `k`-th device of an arrival process is due at the instant the rate profile
//! has accumulated `k` arrivals (`rate`, then each stage: a linear ramp or a hold; after the
//! last stage the last rate goes on), whatever happened to the devices before it. Its latency
//! counts from that slot, so a slow CA shows up as latency instead of silently stretching the
//! test. The slots are computed, not paced by a limiter: a GCRA limiter such as governor re-bases
//! on every late check; measured here it drifted 83 ms behind after 450 arrivals at 50/s.
//!
//! **Closed model.** `max_in_flight` places: a device starts when it gets a place and gives it
//! back when it has finished enrolling (see `device::gate`); its latency counts from when it got
//! the place. With a `rate` as well, the places cap the open model and a device that had to wait
//! for one is late.
//!
//! A device that starts more than [`LATE_AFTER`] after its slot is **late**: counted in the
//! report and its lateness recorded as `arrival.late`, never silently shifted.
//!
//! Each process runs in its own task and hands due devices to the run loop through a channel.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::shard::{Shard, ShardError};
use crate::device::DeviceSpec;
use crate::scenario::Arrival;
use crate::scenario::arrival::Step;

/// Starting later than this after the slot makes a device late: one timer tick (tokio's timer
/// has millisecond resolution) plus one of scheduling slack.
pub const LATE_AFTER: Duration = Duration::from_millis(2);

/// The rate over time of an open model.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    start_rate: f64,
    /// (length, rate at start, rate at end), in order.
    segments: Vec<(f64, f64, f64)>,
}

impl Profile {
    pub fn new(rate: f64, steps: &[Step]) -> Self {
        let mut segments = Vec::with_capacity(steps.len());
        let mut current = rate;
        for step in steps {
            match *step {
                Step::Ramp { to, over } => {
                    segments.push((over.as_secs_f64(), current, to));
                    current = to;
                }
                Step::Hold(span) => segments.push((span.as_secs_f64(), current, current)),
            }
        }
        Self {
            start_rate: rate,
            segments,
        }
    }

    fn final_rate(&self) -> f64 {
        self.segments.last().map_or(self.start_rate, |s| s.2)
    }

    /// When, from the start, the `k`-th arrival (from 0) is due: the instant the integral of
    /// the rate reaches `k`.
    pub fn offset(&self, k: u64) -> Duration {
        let mut left = k as f64;
        let mut elapsed = 0.0;
        for &(length, r0, r1) in &self.segments {
            let area = (r0 + r1) / 2.0 * length;
            if left <= area {
                return saturating_secs(elapsed + time_to_accumulate(left, r0, r1, length));
            }
            left -= area;
            elapsed += length;
        }
        saturating_secs(elapsed + left / self.final_rate())
    }
}

/// `secs` as a `Duration`, at most [`NEVER`]: a slot that far away is past any run's end, and
/// still far from overflowing an `Instant`.
fn saturating_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).map_or(NEVER, |d| d.min(NEVER))
}

/// Later than any run ends: twice the longest duration a scenario may write.
const NEVER: Duration = Duration::from_secs(2 * 36_525 * 86_400);

/// The time τ at which `r0·τ + (r1 − r0)·τ²/(2·length)` reaches `x` (x within the segment).
fn time_to_accumulate(x: f64, r0: f64, r1: f64, length: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let a = (r1 - r0) / (2.0 * length);
    // The root of a·τ² + r0·τ − x written without the cancellation of (−r0 + √…)/(2a), and
    // valid for a = 0 too.
    let disc = (r0 * r0 + 4.0 * a * x).max(0.0);
    let tau = 2.0 * x / (r0 + disc.sqrt());
    if tau.is_finite() {
        tau.min(length)
    } else {
        length
    }
}

/// How one process lets devices start.
#[derive(Debug, Clone)]
pub enum Model {
    Open {
        profile: Profile,
        /// Places in flight capping the open model.
        cap: Option<Arc<Semaphore>>,
    },
    Closed(Arc<Semaphore>),
}

impl Model {
    /// The model of `arrival` in `shard`: places divided among shards (slots are not: a shard
    /// keeps its devices' slots of the whole schedule).
    pub fn new(arrival: &Arrival, shard: Shard) -> Result<Self, ShardError> {
        let places = match arrival.max_in_flight {
            Some(n) => Some(Arc::new(Semaphore::new(shard.places(n.get())? as usize))),
            None => None,
        };
        Ok(match (arrival.rate, places) {
            (Some(rate), cap) => Model::Open {
                profile: Profile::new(rate.0, &arrival.steps()),
                cap,
            },
            (None, Some(places)) => Model::Closed(places),
            // The loader refuses an arrival with neither.
            (None, None) => Model::Closed(Arc::new(Semaphore::new(1))),
        })
    }
}

/// A device of a process, with its ordinal in the whole (unsharded) process.
pub struct Queued {
    pub ordinal: u64,
    pub cohort: usize,
    pub spec: DeviceSpec,
}

/// A device that may start now.
pub struct Due {
    pub cohort: usize,
    pub spec: DeviceSpec,
    /// Its slot (open model) or when it got its place (closed model).
    pub intended: Instant,
    /// Whether it had a slot to keep (open model), so that starting later counts as late.
    pub scheduled: bool,
    pub place: Option<OwnedSemaphorePermit>,
}

/// The arrival processes of `plan` in `shard`: the fleet's (cohorts without an arrival of
/// their own, interleaved) first, then one per cohort with its own. Ordinals are positions in
/// the whole process, so a shard's devices keep their slots.
pub fn processes(
    fleet_arrival: Option<&Arrival>,
    plan: super::cohorts::FleetPlan,
    shard: Shard,
) -> Result<Vec<(Model, Vec<Queued>)>, ShardError> {
    // Process 0 is the fleet's; cohort c with its own arrival gets process own[c]. Without a
    // fleet arrival (every cohort has its own, as the loader checked) process 0 stays empty.
    let fleet_model = match fleet_arrival {
        Some(a) => Model::new(a, shard)?,
        None => Model::Closed(Arc::new(Semaphore::new(1))),
    };
    let mut models = vec![fleet_model];
    let mut own = vec![0usize; plan.arrivals.len()];
    for (c, arrival) in plan.arrivals.iter().enumerate() {
        if let Some(a) = arrival {
            own[c] = models.len();
            models.push(Model::new(a, shard)?);
        }
    }
    let mut queues: Vec<Vec<Queued>> = models.iter().map(|_| Vec::new()).collect();
    let mut ordinals = vec![0u64; models.len()];
    // A shard takes every n-th device of each cohort, so each cohort splits evenly.
    let mut in_cohort = vec![0u64; plan.arrivals.len()];
    for (cohort, spec) in plan.devices {
        let process = own[cohort];
        let ordinal = ordinals[process];
        ordinals[process] += 1;
        let member = in_cohort[cohort];
        in_cohort[cohort] += 1;
        if shard.owns(member) {
            queues[process].push(Queued {
                ordinal,
                cohort,
                spec,
            });
        }
    }
    Ok(models
        .into_iter()
        .zip(queues)
        .filter(|(_, q)| !q.is_empty())
        .collect())
}

/// A short description for the run's first line, e.g. `50/s` or `at most 20 in flight`.
pub fn describe(arrival: &Arrival) -> String {
    let mut parts = Vec::new();
    if let Some(rate) = arrival.rate {
        parts.push(format!("{:.1}/s", rate.0));
    }
    if !arrival.stages.is_empty() {
        parts.push(format!("then {} stages", arrival.stages.len()));
    }
    if let Some(n) = arrival.max_in_flight {
        parts.push(format!("at most {n} in flight"));
    }
    parts.join(", ")
}

/// Starts one task per process; they send due devices on `due` and end when their devices have
/// all been sent or `stop` is cancelled. The channel closes when every process is done.
pub fn start(
    processes: Vec<(Model, Vec<Queued>)>,
    start: Instant,
    stop: &CancellationToken,
    due: mpsc::UnboundedSender<Due>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for (model, queue) in processes {
        let stop = stop.clone();
        let due = due.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = run_process(model, queue, start, due) => {}
            }
        });
    }
    tasks
}

async fn run_process(
    model: Model,
    queue: Vec<Queued>,
    start: Instant,
    due: mpsc::UnboundedSender<Due>,
) {
    for q in queue {
        let scheduled = matches!(model, Model::Open { .. });
        let (intended, place) = match &model {
            Model::Open { profile, cap } => {
                let slot = start + profile.offset(q.ordinal);
                tokio::time::sleep_until(slot).await;
                let place = match cap {
                    Some(places) => match places.clone().acquire_owned().await {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                    None => None,
                };
                (slot, place)
            }
            Model::Closed(places) => match places.clone().acquire_owned().await {
                Ok(p) => (Instant::now(), Some(p)),
                Err(_) => return,
            },
        };
        let device = Due {
            cohort: q.cohort,
            spec: q.spec,
            intended,
            scheduled,
            place,
        };
        if due.send(device).is_err() {
            return;
        }
        crate::inject::panic_at("arrivals");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn constant_rate_is_exact_slots() {
        let p = Profile::new(50.0, &[]);
        assert_eq!(p.offset(0), Duration::ZERO);
        // A rate whose interval is past what a Duration holds saturates instead of panicking.
        assert_eq!(Profile::new(1e-20, &[]).offset(1), NEVER);
        assert!((ms(p.offset(450)) - 9000.0).abs() < 1e-6);
    }

    #[test]
    fn ramps_and_holds_accumulate_their_area() {
        // 10/s ramping to 30/s over 10 s: 200 arrivals in the ramp; then 30/s held for 5 s.
        let p = Profile::new(
            10.0,
            &[
                Step::Ramp {
                    to: 30.0,
                    over: Duration::from_secs(10),
                },
                Step::Hold(Duration::from_secs(5)),
            ],
        );
        assert!((ms(p.offset(200)) - 10_000.0).abs() < 1e-3);
        assert!((ms(p.offset(350)) - 15_000.0).abs() < 1e-3);
        // Past the stages the last rate goes on.
        assert!((ms(p.offset(380)) - 16_000.0).abs() < 1e-3);
        // Within the ramp: 10τ + τ² = 24 at τ = 2 s.
        assert!((ms(p.offset(24)) - 2_000.0).abs() < 1e-3);
        // Slots never go backwards, also on a ramp down.
        let down = Profile::new(
            30.0,
            &[Step::Ramp {
                to: 1.0,
                over: Duration::from_secs(10),
            }],
        );
        let slots: Vec<Duration> = (0..200).map(|k| down.offset(k)).collect();
        assert!(slots.windows(2).all(|w| w[0] <= w[1]));
    }
}
