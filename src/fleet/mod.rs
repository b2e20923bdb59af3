//! The run as a whole: resolve the target (starting the embedded emulators if asked), plan the
//! fleet ([`cohorts`]) and this process's slice of it ([`shard`]), start devices as the arrival
//! processes say ([`arrivals`]) under the fleet's limits ([`limits`]), run them for the duration,
//! stop them cleanly (at the end or on the shutdown signal, e.g. Ctrl-C) and build the report.

pub mod arrivals;
mod bulk;
pub mod cohorts;
mod events;
mod health;
mod limits;
mod prometheus;
pub mod resume;
pub mod shard;
pub mod target;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::{DeviceReport, DeviceSpec, run_device};
use crate::emulator::{CaEmulator, HubEmulator};
use crate::metrics::{Outcome, Phase, Recorder};
use crate::report::hlog::IntervalLog;
use crate::report::{CohortCounts, DeviceCounts, Report};
use crate::scenario::{Registration, Scenario, Target};
pub use shard::Shard;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("emulators: {0}")]
    Emulator(#[from] crate::emulator::EmulatorError),
    #[error("EZCA: {0}")]
    Ezca(#[from] crate::ezca::EzcaError),
    #[error("IoT Hub: {0}")]
    Hub(#[from] crate::iothub::HubError),
    #[error("{0}")]
    Setup(String),
    #[error("report: {0}")]
    Report(#[from] crate::report::ReportError),
    #[error("{0}")]
    Shard(#[from] shard::ShardError),
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Live view, progress lines or nothing (see [`crate::ui`]).
    pub progress: crate::ui::Progress,
    /// Write the interval log (`.hlog`) here, every `report.interval` of the scenario.
    pub interval_log: Option<PathBuf>,
    /// Serve Prometheus `/metrics` on this bound listener for the life of the run (the caller
    /// binds it, so tests can use port 0 and learn the address first).
    pub metrics_listener: Option<Arc<std::net::TcpListener>>,
    /// The slice of the fleet this process runs (the whole fleet by default).
    pub shard: Shard,
    /// Keep (and resume from) the soak's state in this SQLite file (`--state`).
    pub state: Option<crate::state::StateFile>,
}

/// Everything a run produced. The embedded emulators have stopped serving, but their state can
/// still be read (tests compare it with what the devices saw).
pub struct RunOutcome {
    pub report: Report,
    pub devices: Vec<DeviceReport>,
    pub ca: Option<CaEmulator>,
    pub hub: Option<HubEmulator>,
}

/// How long devices get to disconnect cleanly once the run ends.
const DRAIN: Duration = Duration::from_secs(15);

/// The specs of every device of the scenario (all shards), deterministic in its seed; each
/// carries its cohort's settings.
pub fn device_specs(scenario: &Scenario) -> Vec<DeviceSpec> {
    cohorts::plan(scenario)
        .devices
        .into_iter()
        .map(|(_, spec)| spec)
        .collect()
}

/// Runs `scenario` until its duration has passed or `shutdown` completes.
pub async fn run(
    scenario: &Scenario,
    options: &RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunOutcome, FleetError> {
    // The live view stops the run through `quit` (in raw mode Ctrl-C is a key, not SIGINT).
    let quit = CancellationToken::new();
    let shutdown = async {
        tokio::select! {
            _ = shutdown => {}
            _ = quit.cancelled() => {}
        }
    };
    tokio::pin!(shutdown);
    crate::crypto::install_crypto_provider();
    let shard = options.shard;
    let plan = cohorts::plan(scenario);
    shard.check_devices(plan.devices.len() as u64)?;
    let cohort_names = plan.names.clone();
    let mut processes = arrivals::processes(scenario.fleet.arrival().as_ref(), plan, shard)?;
    let mut cohort_planned = vec![0u64; cohort_names.len()];
    for q in processes.iter().flat_map(|(_, queue)| queue) {
        cohort_planned[q.cohort] += 1;
    }
    let planned: u64 = cohort_planned.iter().sum();
    if planned == 0 {
        return Err(FleetError::Setup(format!(
            "--shard {shard}: no device of the fleet falls in this shard"
        )));
    }
    let recorder = Arc::new(Recorder::new());
    let mut opened = match &options.state {
        Some(file) => Some(resume::open(file)?),
        None => None,
    };
    let mut elapsed_before = Duration::ZERO;
    if let Some(o) = &opened {
        o.seed(&recorder)?;
        elapsed_before = Duration::from_millis(o.checkpoint.as_ref().map_or(0, |c| c.elapsed_ms));
        if !o.intents.unresolved.is_empty() {
            tracing::warn!(
                devices = ?o.intents.unresolved,
                "certificate requests cut off by the last stop could not be matched; these devices request again"
            );
        }
        if options.progress != crate::ui::Progress::Off && o.resumed {
            eprintln!(
                "fleetsim: resuming from {} ({} devices known, {:.1} s done, {} certificates recovered)",
                options
                    .state
                    .as_ref()
                    .map_or(String::new(), |f| f.path.display().to_string()),
                o.devices.len(),
                elapsed_before.as_secs_f64(),
                o.intents.adopted.len()
            );
        }
    }
    let journal = opened.as_ref().map(|o| o.journal());
    let mut resolved = target::resolve(scenario, recorder.clone(), opened.as_ref()).await?;
    Arc::get_mut(&mut resolved.services)
        .ok_or_else(|| FleetError::Setup("device services are already shared".into()))?
        .gate = limits::gate(&scenario.fleet.limits, shard);
    let services = resolved.services;
    // Devices a previous part of the soak started come back at once, with what the state holds
    // for them; the others keep their arrival slots.
    let mut known: Vec<(usize, DeviceSpec)> = Vec::new();
    if let Some(o) = &opened {
        for (_, queue) in processes.iter_mut() {
            let (back, fresh): (Vec<_>, Vec<_>) = std::mem::take(queue)
                .into_iter()
                .map(|mut q| {
                    q.spec.resume = o.devices.get(&q.spec.id).cloned().map(Arc::new);
                    q
                })
                .partition(|q| q.spec.resume.is_some());
            *queue = fresh;
            known.extend(back.into_iter().map(|q| (q.cohort, q.spec)));
        }
    }
    // Revocation events reach devices through a command channel each (only when the scenario
    // has events); they pick among the devices started so far.
    let mut events = events::Events::new(
        scenario,
        processes
            .iter_mut()
            .flat_map(|(_, queue)| queue.iter_mut().map(|q| &mut q.spec))
            .chain(known.iter_mut().map(|(_, spec)| spec)),
    );
    let mut started_indices: Vec<u64> = Vec::with_capacity(planned as usize);
    let stop = CancellationToken::new();
    let metrics_stop = CancellationToken::new();
    // Stops the endpoint on every way out, early errors included.
    let metrics_guard = metrics_stop.clone().drop_guard();
    let metrics_task = match &options.metrics_listener {
        Some(listener) => {
            let emulators = resolved
                .emulators
                .as_ref()
                .map(|e| (e.ca.clone(), e.hub.clone()));
            Some(prometheus::start(
                listener,
                recorder.clone(),
                emulators,
                &metrics_stop,
            )?)
        }
        None => None,
    };
    let resumed = opened.as_ref().is_some_and(|o| o.resumed);
    // A resumed run's hub registry was restored (embedded) or is still there (remote).
    if scenario.fleet.registration == Registration::Bulk && !resumed {
        let ids: Vec<String> = processes
            .iter()
            .flat_map(|(_, queue)| queue.iter().map(|q| q.spec.id.clone()))
            .collect();
        if options.progress != crate::ui::Progress::Off {
            eprintln!("fleetsim: registering {} devices in bulk", ids.len());
        }
        let register = bulk::register_all(&services, &ids, &stop);
        tokio::pin!(register);
        tokio::select! {
            r = &mut register => r?,
            _ = &mut shutdown => stop.cancel(),
        }
    }

    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let now = Instant::now();
    // A resumed run continues its duration and arrival slots where the last one stopped.
    let start = now.checked_sub(elapsed_before).unwrap_or(now);
    let end = start + scenario.duration.0;
    // Shown until the devices have drained; dropping it gives the terminal back on every way out.
    let watcher = crate::ui::start(
        options.progress,
        crate::ui::Watch {
            recorder: recorder.clone(),
            title: scenario.name.clone(),
            start: start.into_std(),
            duration: scenario.duration.0,
            planned,
            quit: quit.clone(),
        },
    );
    let mut interval_log = match &options.interval_log {
        Some(path) => Some(IntervalLog::create(
            path,
            &scenario.name,
            start.into_std(),
            std::time::SystemTime::now(),
        )?),
        None => None,
    };
    let every = scenario.report.interval.0;
    // A resumed run's start lies in the past: its first tick is the next one on the run's grid
    // (not a burst of the ticks it was down for).
    let done_intervals = (elapsed_before.as_secs_f64() / every.as_secs_f64()).floor() as u32;
    let mut interval_tick = tokio::time::interval_at(start + every * (done_intervals + 1), every);
    interval_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut timeline = match opened.as_mut().and_then(|o| o.timeline.take()) {
        Some((previous, boundary)) => {
            crate::report::timeline::Sampler::resume(start.into_std(), every, previous, boundary)
        }
        None => crate::report::timeline::Sampler::new(start.into_std(), every),
    };
    let mut devices = JoinSet::new();
    let mut reports = Vec::with_capacity(planned as usize);
    let mut report_cohorts: Vec<usize> = Vec::with_capacity(planned as usize);

    // Devices start when their arrival process says (see `arrivals`): their latency counts from
    // that instant, and one that starts late is counted as late, never silently shifted.
    let (due_tx, mut due) = tokio::sync::mpsc::unbounded_channel();
    let mut arrival_tasks = arrivals::start(processes, start, &stop, due_tx);
    let mut cohort_of: std::collections::HashMap<u64, usize> = Default::default();
    let mut started = 0u64;
    let mut cohort_started = vec![0u64; cohort_names.len()];
    let mut late = 0u64;
    for (cohort, spec) in known {
        let index = spec.index;
        started += 1;
        started_indices.push(index);
        cohort_of.insert(index, cohort);
        cohort_started[cohort] += 1;
        let services = services.clone();
        let token = stop.child_token();
        devices.spawn(async move { (index, run_device(spec, services, now, token).await) });
    }
    let mut checkpoint_tick = tokio::time::interval(Duration::from_secs(1));
    let mut new_segment = true;
    let mut arrivals_done = stop.is_cancelled();
    let mut interrupted = stop.is_cancelled();
    // Interrupted during bulk registration: the shutdown future has completed already.
    while !interrupted {
        tokio::select! {
            _ = &mut shutdown => { interrupted = true; break; }
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep_until(events.next_at(start).unwrap_or(end)),
                if events.next_at(start).is_some() => {
                events.fire(&started_indices);
            }
            _ = checkpoint_tick.tick(), if journal.is_some() => {
                if let Some(j) = &journal {
                    resume::checkpoint(j, &scenario.name, &recorder, start.elapsed(), new_segment);
                    new_segment = false;
                }
            }
            _ = interval_tick.tick() => {
                let snapshot = recorder.snapshot();
                timeline.sample(&snapshot, std::time::Instant::now());
                write_interval(&mut interval_log, &snapshot);
                if let Some(j) = &journal {
                    resume::checkpoint_with_timeline(
                        j,
                        &scenario.name,
                        snapshot,
                        start.elapsed(),
                        new_segment,
                        timeline.timeline(),
                    );
                    new_segment = false;
                }
            }
            Some(done) = devices.join_next(), if !devices.is_empty() => {
                if let Ok((index, report)) = done {
                    report_cohorts.push(cohort_of.get(&index).copied().unwrap_or(0));
                    reports.push(report);
                }
            }
            d = due.recv(), if !arrivals_done => match d {
                Some(d) => {
                    let arrivals::Due { cohort, spec, intended, scheduled, place } = d;
                    let now = Instant::now();
                    if scheduled && now.saturating_duration_since(intended) > arrivals::LATE_AFTER {
                        late += 1;
                        recorder.record(Phase::ArrivalLate, Outcome::Ok, intended, now);
                    }
                    started += 1;
                    let index = spec.index;
                    started_indices.push(index);
                    if let Some(j) = &journal {
                        j.started(&spec.id, index);
                    }
                    cohort_of.insert(index, cohort);
                    cohort_started[cohort] += 1;
                    if let Some(place) = place {
                        services.gate.hold_place(index, place);
                    }
                    let services = services.clone();
                    let token = stop.child_token();
                    devices.spawn(async move {
                        let report = run_device(spec, services.clone(), intended, token).await;
                        // A device that stopped or failed while enrolling gives its place back.
                        services.gate.enrolment_done(index);
                        (index, report)
                    });
                }
                None => arrivals_done = true,
            },
        }
    }
    stop.cancel();
    arrival_tasks.abort_all();
    while arrival_tasks.join_next().await.is_some() {}
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(r) = devices.join_next().await {
            if let Ok((index, report)) = r {
                report_cohorts.push(cohort_of.get(&index).copied().unwrap_or(0));
                reports.push(report);
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = devices.len(),
            "devices did not stop in time; aborting them"
        );
        devices.abort_all();
    }
    drop(watcher);
    let wall = start.elapsed().as_secs_f64();

    drop(metrics_guard);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }

    let (ca, hub) = match resolved.emulators {
        Some(e) => {
            let handles = (Some(e.ca.clone()), Some(e.hub.clone()));
            e.shutdown().await;
            handles
        }
        None => (None, None),
    };
    if let (Some(j), Some(o)) = (&journal, opened) {
        let elapsed = start.elapsed().min(scenario.duration.0);
        resume::checkpoint(j, &scenario.name, &recorder, elapsed, new_segment);
        resume::close(o, options.state.as_ref()).await;
    }
    let target_name = match &scenario.target.value {
        Target::Embedded(_) => "embedded",
        Target::Remote(_) => "remote",
    };
    // One snapshot for all, so the interval log and the timeline sum exactly to the report.
    let snapshot = recorder.snapshot();
    let snapshot_certs = snapshot.certs.clone();
    write_interval(&mut interval_log, &snapshot);
    timeline.sample(&snapshot, std::time::Instant::now());
    let mut report = Report::new(&scenario.name, target_name, started_at, wall, snapshot)?;
    report.interrupted = interrupted;
    report.devices = count_devices(&reports, planned, started);
    report.devices.late = late;
    report.shard = (!shard.is_whole()).then(|| shard.to_string());
    let mut cohorts: Vec<CohortCounts> = cohort_names
        .iter()
        .enumerate()
        .map(|(c, name)| CohortCounts {
            name: name.clone(),
            planned: cohort_planned[c],
            started: cohort_started[c],
            ..CohortCounts::default()
        })
        .collect();
    for (r, &c) in reports.iter().zip(&report_cohorts) {
        if let Some(counts) = cohorts.get_mut(c) {
            counts.enrolled += u64::from(r.enrolled);
            counts.connected += u64::from(r.connected);
            counts.failed += u64::from(r.failure.is_some());
        }
    }
    report.cohorts = cohorts;
    report.messages.failed = reports.iter().map(|r| r.messages_failed).sum();
    report.hub = hub.as_ref().map(|h| health::hub_counts(h.stats()));
    report.certificates = Some(health::certificate_report(
        scenario,
        &recorder,
        &reports,
        hub.as_ref(),
        snapshot_certs,
    ));
    report.key_pool = services.keys.counts().map(target::pool_counts);
    report.timeline = Some(timeline.finish());
    report.thresholds = crate::report::thresholds::evaluate(&scenario.thresholds, &report)?;
    reports.sort_by_key(|r| r.id.clone());
    Ok(RunOutcome {
        report,
        devices: reports,
        ca,
        hub,
    })
}

/// Appends an interval to the log; a log that cannot be written is reported once and dropped,
/// since the run itself (and its final report) is still worth having.
fn write_interval(log: &mut Option<IntervalLog>, snapshot: &crate::metrics::Snapshot) {
    if let Some(l) = log
        && let Err(e) = l.write_interval(snapshot, std::time::Instant::now())
    {
        tracing::warn!(error = %e, "interval log stopped");
        *log = None;
    }
}

fn count_devices(reports: &[DeviceReport], planned: u64, started: u64) -> DeviceCounts {
    let count = |f: fn(&DeviceReport) -> bool| reports.iter().filter(|r| f(r)).count() as u64;
    DeviceCounts {
        planned,
        started,
        enrolled: count(|r| r.enrolled),
        connected: count(|r| r.connected),
        renewed: count(|r| r.renewals > 0),
        renewals: reports.iter().map(|r| r.renewals).sum(),
        failed: count(|r| r.failure.is_some()),
        late: 0,
    }
}
