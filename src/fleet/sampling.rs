//! What a run writes down as it goes: a timeline point and an interval-log entry (`.hlog`) every
//! `report.interval`, and, with `--state`, a checkpoint of the recorder every second and with
//! each timeline point, so a resumed soak continues its counters and its timeline exactly.

use std::path::Path;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::error::FleetError;
use super::resume::{self, Opened};
use crate::metrics::{Recorder, Snapshot};
use crate::report::hlog::IntervalLog;
use crate::report::timeline::{Sampler, Timeline};
use crate::scenario::Scenario;
use crate::state::DeviceJournal;

/// How often the soak state gets a checkpoint of the recorder.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Sampling {
    scenario: String,
    /// The run's start (earlier than now when a soak resumes).
    start: Instant,
    timeline: Sampler,
    interval_log: Option<IntervalLog>,
    every: Interval,
    checkpoints: Option<Checkpoints>,
}

struct Checkpoints {
    journal: DeviceJournal,
    tick: Interval,
    /// The next checkpoint starts a new segment of the soak (the first one of this part).
    new_segment: bool,
}

/// What is due.
pub(super) enum Tick {
    /// A timeline point (and an interval-log entry, and a checkpoint with the timeline).
    Interval,
    /// A checkpoint of the recorder.
    Checkpoint,
}

impl Sampling {
    /// Starts sampling a run that started at `start`, `elapsed_before` of it done by earlier
    /// parts of a resumed soak (`soak`, whose timeline it continues).
    pub fn start(
        scenario: &Scenario,
        interval_log: Option<&Path>,
        start: Instant,
        elapsed_before: Duration,
        soak: Option<&mut Opened>,
    ) -> Result<Self, FleetError> {
        let interval_log = match interval_log {
            Some(path) => Some(IntervalLog::create(
                path,
                &scenario.name,
                start.into_std(),
                std::time::SystemTime::now(),
            )?),
            None => None,
        };
        let every = scenario.report.interval.0;
        // A resumed run's start lies in the past: its first tick is the next one on the run's
        // grid (not a burst of the ticks it was down for).
        let done = (elapsed_before.as_secs_f64() / every.as_secs_f64()).floor() as u32;
        let mut tick = tokio::time::interval_at(start + every * (done + 1), every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let checkpoints = soak.as_ref().map(|o| Checkpoints {
            journal: o.journal(),
            tick: tokio::time::interval(CHECKPOINT_EVERY),
            new_segment: true,
        });
        let timeline = match soak.and_then(|o| o.timeline.take()) {
            Some((previous, boundary)) => {
                Sampler::resume(start.into_std(), every, previous, boundary)
            }
            None => Sampler::new(start.into_std(), every),
        };
        Ok(Self {
            scenario: scenario.name.clone(),
            start,
            timeline,
            interval_log,
            every: tick,
            checkpoints,
        })
    }

    /// Waits until something is due.
    pub async fn next(&mut self) -> Tick {
        match &mut self.checkpoints {
            Some(c) => tokio::select! {
                _ = self.every.tick() => Tick::Interval,
                _ = c.tick.tick() => Tick::Checkpoint,
            },
            None => {
                self.every.tick().await;
                Tick::Interval
            }
        }
    }

    /// Does what is due.
    pub fn take(&mut self, tick: Tick, recorder: &Recorder) {
        match tick {
            Tick::Interval => self.interval(recorder),
            Tick::Checkpoint => self.checkpoint(recorder, self.start.elapsed()),
        }
    }

    fn interval(&mut self, recorder: &Recorder) {
        let snapshot = recorder.snapshot();
        self.timeline.sample(&snapshot, std::time::Instant::now());
        write_interval(&mut self.interval_log, &snapshot);
        if let Some(c) = &mut self.checkpoints {
            resume::checkpoint_with_timeline(
                &c.journal,
                &self.scenario,
                snapshot,
                self.start.elapsed(),
                c.new_segment,
                self.timeline.timeline(),
            );
            c.new_segment = false;
        }
    }

    /// A checkpoint of `recorder` at `elapsed` of the run (with `--state`).
    pub fn checkpoint(&mut self, recorder: &Recorder, elapsed: Duration) {
        if let Some(c) = &mut self.checkpoints {
            resume::checkpoint(&c.journal, &self.scenario, recorder, elapsed, c.new_segment);
            c.new_segment = false;
        }
    }

    /// The last interval and timeline point, from the run's final `snapshot` (so the interval
    /// log and the timeline sum exactly to the report); the timeline.
    pub fn finish(mut self, snapshot: &Snapshot) -> Timeline {
        write_interval(&mut self.interval_log, snapshot);
        self.timeline.sample(snapshot, std::time::Instant::now());
        self.timeline.finish()
    }
}

/// Appends an interval to the log; a log that cannot be written is reported once and dropped,
/// since the run itself (and its final report) is still worth having.
fn write_interval(log: &mut Option<IntervalLog>, snapshot: &Snapshot) {
    if let Some(l) = log
        && let Err(e) = l.write_interval(snapshot, std::time::Instant::now())
    {
        tracing::warn!(error = %e, "interval log stopped");
        *log = None;
    }
}
