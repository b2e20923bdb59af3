//! The run as a whole: resolve the target (starting the embedded emulators if asked), start
//! devices at the scenario's arrival rate, run them for the duration, stop them cleanly (at the
//! end or on the shutdown signal, e.g. Ctrl-C) and build the report.

mod bulk;
mod prometheus;
pub mod target;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::{DeviceReport, DeviceSpec, run_device};
use crate::emulator::{CaEmulator, HubEmulator};
use crate::metrics::Recorder;
use crate::report::hlog::IntervalLog;
use crate::report::{DeviceCounts, Report};
use crate::scenario::{Qos, Registration, Scenario, Target};

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

/// The specs of every device of the scenario, deterministic in its seed.
pub fn device_specs(scenario: &Scenario) -> Vec<DeviceSpec> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(scenario.seed);
    let c = &scenario.certificate;
    (0..u64::from(scenario.fleet.devices.get()))
        .map(|index| {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
            DeviceSpec {
                index,
                id: scenario.fleet.id_pattern.render(index, &uuid),
                key_kind: c.key,
                validity_days: c.validity_days.get(),
                renew_fraction: c.renew_at.fraction(),
                telemetry_interval: scenario.telemetry.interval.0,
                at_least_once: scenario.telemetry.qos == Qos::AtLeastOnce,
                register: scenario.fleet.registration == Registration::PerDevice,
                seed: rng.next_u64(),
            }
        })
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
    let recorder = Arc::new(Recorder::new());
    let resolved = target::resolve(scenario, recorder.clone()).await?;
    let services = resolved.services;
    let specs = device_specs(scenario);
    let planned = specs.len() as u64;
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
    if scenario.fleet.registration == Registration::Bulk {
        let ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
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
    let start = Instant::now();
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
    let mut interval_tick = tokio::time::interval_at(start + every, every);
    let mut timeline = crate::report::timeline::Sampler::new(start.into_std(), every);
    let mut devices = JoinSet::new();
    let mut reports = Vec::with_capacity(planned as usize);

    // Open-model arrivals: device i is due at start + i × period, whatever happened to the
    // devices before it, and its enrolment latency counts from that slot, so a slow scheduler or a
    // slow CA shows up as latency instead of silently stretching the test. (A GCRA limiter such as
    // governor re-bases on every late check; measured here it drifted 83 ms behind after 450
    // arrivals at 50/s, so the schedule is the slots themselves.)
    let rate = scenario.fleet.arrival_rate.0;
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut pending = specs.into_iter().enumerate();
    let mut arrivals_done = stop.is_cancelled();
    let mut interrupted = stop.is_cancelled();
    let mut next_slot = 0usize;
    // Interrupted during bulk registration: the shutdown future has completed already.
    while !interrupted {
        let arrival = tokio::time::sleep_until(start + period.mul_f64(next_slot as f64));
        tokio::select! {
            _ = &mut shutdown => { interrupted = true; break; }
            _ = tokio::time::sleep_until(end) => break,
            _ = interval_tick.tick() => {
                let snapshot = recorder.snapshot();
                timeline.sample(&snapshot, std::time::Instant::now());
                write_interval(&mut interval_log, &snapshot);
            }
            Some(done) = devices.join_next(), if !devices.is_empty() => {
                if let Ok(report) = done {
                    reports.push(report);
                }
            }
            _ = arrival, if !arrivals_done => match pending.next() {
                Some((i, spec)) => {
                    let intended = start + period.mul_f64(i as f64);
                    next_slot = i + 1;
                    devices.spawn(run_device(spec, services.clone(), intended, stop.child_token()));
                }
                None => arrivals_done = true,
            },
        }
    }
    let started = planned - pending.len() as u64;
    stop.cancel();
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(r) = devices.join_next().await {
            if let Ok(report) = r {
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
    let target_name = match &scenario.target.value {
        Target::Embedded(_) => "embedded",
        Target::Remote(_) => "remote",
    };
    // One snapshot for all, so the interval log and the timeline sum exactly to the report.
    let snapshot = recorder.snapshot();
    write_interval(&mut interval_log, &snapshot);
    timeline.sample(&snapshot, std::time::Instant::now());
    let mut report = Report::new(&scenario.name, target_name, started_at, wall, snapshot)?;
    report.interrupted = interrupted;
    report.devices = count_devices(&reports, planned, started);
    report.messages.failed = reports.iter().map(|r| r.messages_failed).sum();
    report.hub = hub.as_ref().map(|h| h.stats().into());
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
    }
}
