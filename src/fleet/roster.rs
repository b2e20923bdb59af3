//! The devices of a run: one task each, started as its arrival process lets it in (or at once,
//! for a device a resumed soak brings back), and what the report counts of them: who started,
//! per cohort, who was late, and each finished device's report with its cohort.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::arrivals::{Due, LATE_AFTER};
use super::target::FleetServices;
use crate::device::{DeviceReport, DeviceSpec, run_device};
use crate::metrics::{Outcome, Phase, Recorder};
use crate::state::DeviceJournal;

/// What a device task ends with: the device's index and its report.
type Finished = (u64, DeviceReport);

pub(super) struct Roster {
    services: Arc<FleetServices>,
    stop: CancellationToken,
    /// The soak state (`--state`) learns which devices started.
    journal: Option<DeviceJournal>,
    tasks: JoinSet<Finished>,
    /// Started devices' indices, in start order (events pick among them).
    started: Vec<u64>,
    cohort_of: HashMap<u64, usize>,
    pub started_per_cohort: Vec<u64>,
    /// Devices that started more than [`LATE_AFTER`] after their slot.
    pub late: u64,
    /// Device tasks that panicked outside the device's own catch (they left no report).
    pub task_panics: u64,
    /// Finished devices' reports, and each one's cohort at the same position.
    pub reports: Vec<DeviceReport>,
    pub report_cohorts: Vec<usize>,
}

impl Roster {
    /// An empty roster of a fleet of `cohorts` cohorts and `planned` devices; each device's
    /// task stops when `stop` is cancelled.
    pub fn new(
        services: Arc<FleetServices>,
        stop: &CancellationToken,
        journal: Option<DeviceJournal>,
        cohorts: usize,
        planned: u64,
    ) -> Self {
        Self {
            services,
            stop: stop.clone(),
            journal,
            tasks: JoinSet::new(),
            started: Vec::with_capacity(planned as usize),
            cohort_of: HashMap::new(),
            started_per_cohort: vec![0; cohorts],
            late: 0,
            task_panics: 0,
            reports: Vec::with_capacity(planned as usize),
            report_cohorts: Vec::with_capacity(planned as usize),
        }
    }

    /// A device an earlier part of the soak started: it starts now, counted from `now`.
    pub fn bring_back(&mut self, cohort: usize, spec: DeviceSpec, now: Instant) {
        self.start(cohort, spec, now);
    }

    /// A device its arrival process let in. Its latency counts from its slot; starting more
    /// than [`LATE_AFTER`] after it makes it late (recorded as `arrival.late`).
    pub fn arrive(&mut self, due: Due, recorder: &Recorder) {
        let Due {
            cohort,
            spec,
            intended,
            scheduled,
            place,
        } = due;
        let now = Instant::now();
        if scheduled && now.saturating_duration_since(intended) > LATE_AFTER {
            self.late += 1;
            recorder.record(Phase::ArrivalLate, Outcome::Ok, intended, now);
        }
        if let Some(j) = &self.journal {
            j.started(&spec.id, spec.index);
        }
        if let Some(place) = place {
            self.services.gate.hold_place(spec.index, place);
        }
        self.start(cohort, spec, intended);
    }

    fn start(&mut self, cohort: usize, spec: DeviceSpec, intended: Instant) {
        let index = spec.index;
        self.started.push(index);
        self.cohort_of.insert(index, cohort);
        self.started_per_cohort[cohort] += 1;
        let services = self.services.clone();
        let token = self.stop.child_token();
        self.tasks.spawn(async move {
            let report = run_device(spec, services.clone(), intended, token).await;
            // A device that stopped or failed while enrolling gives its place back (a no-op for
            // a device that holds none).
            services.gate.enrolment_done(index);
            (index, report)
        });
    }

    /// The indices of the devices started so far, in start order.
    pub fn started(&self) -> &[u64] {
        &self.started
    }

    /// Whether any device task is still running.
    pub fn is_running(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// The next device task to end (`None` when none is running).
    pub async fn next_finished(&mut self) -> Option<Result<Finished, JoinError>> {
        self.tasks.join_next().await
    }

    /// Keeps a finished device's report (a task that panicked or was aborted has none; a
    /// panic is counted).
    pub fn finished(&mut self, joined: Result<Finished, JoinError>) {
        match joined {
            Ok((index, report)) => {
                self.report_cohorts
                    .push(self.cohort_of.get(&index).copied().unwrap_or(0));
                self.reports.push(report);
            }
            Err(e) if e.is_panic() => {
                tracing::error!(error = %e, "a device task panicked");
                self.task_panics += 1;
            }
            Err(_) => {}
        }
    }

    /// Waits up to `within` for the devices (told to stop) to finish; aborts the rest.
    pub async fn drain(&mut self, within: Duration) {
        let drained = tokio::time::timeout(within, async {
            while let Some(joined) = self.tasks.join_next().await {
                self.finished(joined);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "devices did not stop in time; aborting them"
            );
            self.tasks.abort_all();
            // Aborted tasks are dropped by the runtime later: wait for it, so what they held
            // (a QoS 1 message in flight) is closed before the report reads the counts.
            while let Some(joined) = self.tasks.join_next().await {
                self.finished(joined);
            }
        }
    }
}
