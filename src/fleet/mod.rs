//! The run as a whole, in stages ([`run`]):
//! 1. **prepare**: plan the fleet ([`cohorts`]) and this process's slice of it ([`shard`],
//!    `plan`), open the soak state (`--state`, [`resume`]), build the services every device
//!    shares, complete, for the scenario's target (starting the embedded emulators if asked,
//!    [`target`]) with the fleet's limits (`limits`), and start the Prometheus endpoint;
//! 2. **register** the fleet's identities in bulk, if the scenario says so (`bulk`);
//! 3. **drive**: start the clock (`timing`: now, or at a distributed run's start barrier), start
//!    devices as the arrival processes say ([`arrivals`], `roster`), fire the
//!    scenario's events (`events`; fleetsim as the operator takes on the method, desired and
//!    query events, `operator`) and write the timeline, interval log and checkpoints as they
//!    fall due (`sampling`), until the duration has passed or the shutdown signal (e.g. Ctrl-C);
//! 4. **wind down**: stop the devices cleanly, then the endpoint, the emulators and the state;
//! 5. **finish**: the report (`report`).

pub mod arrivals;
mod backend;
mod barrier;
mod bulk;
pub mod cohorts;
pub mod dps;
mod error;
mod events;
mod faults;
mod health;
mod limits;
mod operator;
mod plan;
mod prometheus;
mod report;
pub mod resume;
mod roster;
mod sampling;
pub mod shard;
pub mod target;
mod timing;
mod web;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::device::{DeviceReport, DeviceSpec};
use crate::emulator::{CaEmulator, DpsEmulator, Emulators, HubEmulator};
use crate::metrics::Recorder;
use crate::report::Report;
use crate::scenario::{Registration, Scenario};
pub use error::FleetError;
use plan::Fleet;
use roster::Roster;
use sampling::Sampling;
pub use shard::Shard;
use target::FleetServices;
use timing::Timing;

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
    /// Start the arrival clock at this wall-clock time (`--start-at`), so the shards of a
    /// distributed run start together ([`barrier`]).
    pub start_at: Option<std::time::SystemTime>,
    /// Serve the live web page on this bound listener for the life of the run (`--web`).
    pub web_listener: Option<Arc<std::net::TcpListener>>,
}

/// Everything a run produced. The embedded emulators have stopped serving, but their state can
/// still be read (tests compare it with what the devices saw).
pub struct RunOutcome {
    pub report: Report,
    pub devices: Vec<DeviceReport>,
    pub ca: Option<CaEmulator>,
    pub hub: Option<HubEmulator>,
    /// The further hubs of an embedded DPS run (`target.embedded.dps.hubs`), and its DPS.
    pub extra_hubs: Vec<HubEmulator>,
    pub dps: Option<DpsEmulator>,
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
    let mut run = Run::prepare(scenario, options).await?;
    run.register_in_bulk(shutdown.as_mut()).await?;
    let driven = run.drive(shutdown.as_mut(), quit.clone()).await?;
    let ended = run.wind_down(driven).await;
    // The live page stays up until the report's verdict is on it.
    let page = run.page.take();
    let outcome = run.finish(ended);
    if let Some(page) = page {
        let verdict = outcome.as_ref().ok().map(|o| o.report.thresholds.clone());
        page.finish(verdict).await;
    }
    outcome
}

/// A run once prepared: what its stages share.
struct Run<'a> {
    scenario: &'a Scenario,
    options: &'a RunOptions,
    fleet: Fleet,
    recorder: Arc<Recorder>,
    services: Arc<FleetServices>,
    emulators: Option<Emulators>,
    /// The soak state (`--state`), if the run keeps one.
    soak: Option<resume::Opened>,
    events: events::Events,
    /// The scenario's faults, injected into the embedded emulators.
    faults: faults::Faults,
    /// fleetsim as the operator, when the scenario has method, desired or query events.
    operator: Option<operator::Operator>,
    /// fleetsim as the backend, when the scenario has `backend.consume`.
    backend: Option<backend::Backend>,
    /// Stops the arrival processes, the devices and the operator.
    stop: CancellationToken,
    metrics: Option<prometheus::Endpoint>,
    /// Which device is in which state: the web page's map and the report's.
    board: Arc<crate::metrics::board::DeviceBoard>,
    page: Option<web::Page>,
}

/// A run whose devices have been driven until the end (or the shutdown signal).
struct Driven {
    timing: Timing,
    /// The live view or progress lines, shown until the devices have drained.
    watcher: Option<crate::ui::Watcher>,
    sampling: Sampling,
    roster: Roster,
    arrivals: JoinSet<()>,
    /// Arrival processes that panicked (counted as they did).
    arrival_panics: u64,
    interrupted: bool,
}

/// A run whose devices, endpoint, emulators and state have stopped.
struct Ended {
    backend: Option<crate::report::backend::BackendReport>,
    timing: Timing,
    wall: f64,
    sampling: Sampling,
    roster: Roster,
    interrupted: bool,
    /// Arrival processes that panicked.
    arrival_panics: u64,
    ca: Option<CaEmulator>,
    /// Every embedded hub, the first one first (the others: DPS runs).
    hubs: Vec<HubEmulator>,
    dps: Option<DpsEmulator>,
    /// What the DPS and AMQP accept loops saw, for the report's panics.
    listeners: report::EmulatorListeners,
}

impl<'a> Run<'a> {
    /// Plans the fleet, opens the soak state, builds the services for the target and starts
    /// the metrics endpoint; no device runs yet.
    async fn prepare(scenario: &'a Scenario, options: &'a RunOptions) -> Result<Self, FleetError> {
        let mut fleet = Fleet::plan(scenario, options.shard)?;
        let recorder = Arc::new(Recorder::new());
        let soak = match &options.state {
            Some(file) => {
                let mut opened = resume::open_for_run(file, &recorder, options.progress)?;
                opened.issuing = issuing_key(scenario);
                Some(opened)
            }
            None => None,
        };
        let gate = limits::gate(&scenario.fleet.limits, options.shard);
        let resolved = target::resolve(scenario, recorder.clone(), gate, soak.as_ref()).await?;
        if let Some(soak) = &soak {
            fleet.bring_back(&soak.devices);
        }
        let board = web::board(&fleet, &recorder);
        // Revocation events reach devices through a command channel each (only when the
        // scenario has events); they pick among the devices started so far.
        let events = events::Events::new(scenario, fleet.specs_mut());
        let stop = CancellationToken::new();
        let operator = match (events.need_operator(), &resolved.service) {
            (true, Some(service)) => Some(operator::Operator::new(
                service.clone(),
                resolved.c2d.clone(),
                resolved.services.clone(),
                options.shard.rate(1.0),
                &stop,
            )),
            // Only a remote DPS run leaves the service API out, and only without such events.
            (true, None) => {
                return Err(FleetError::Setup(
                    "the scenario's method, desired, query and c2d events need the hub's service API"
                        .into(),
                ));
            }
            (false, _) => None,
        };
        // Connected before any device starts: the backend reads from `@latest`.
        let backend = match resolved.backend.clone() {
            Some(target) => Some(backend::Backend::start(target, recorder.clone()).await?),
            None => None,
        };
        let metrics = match &options.metrics_listener {
            Some(listener) => {
                let emulators = resolved.emulators.as_ref();
                let handles = emulators.map(|e| (e.ca.clone(), e.hub.clone()));
                Some(prometheus::start(listener, recorder.clone(), handles)?)
            }
            None => None,
        };
        Ok(Self {
            scenario,
            options,
            fleet,
            recorder,
            services: resolved.services,
            emulators: resolved.emulators,
            soak,
            events,
            faults: faults::Faults::new(scenario),
            operator,
            backend,
            stop,
            metrics,
            board,
            page: None,
        })
    }

    /// Creates the fleet's hub identities before the first device arrives, if the scenario
    /// registers in bulk (a resumed run's registry was restored (embedded) or is still there
    /// (remote)). The shutdown signal interrupts it, and then no device starts.
    async fn register_in_bulk(
        &self,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), FleetError> {
        let resumed = self.soak.as_ref().is_some_and(|o| o.resumed);
        if self.scenario.fleet.registration != Registration::Bulk || resumed {
            return Ok(());
        }
        let ids = self.fleet.arriving_ids();
        if self.options.progress != crate::ui::Progress::Off {
            eprintln!("fleetsim: registering {} devices in bulk", ids.len());
        }
        tokio::select! {
            r = bulk::register_all(&self.services, &ids, &self.stop) => r?,
            _ = shutdown => self.stop.cancel(),
        }
        Ok(())
    }

    /// Starts the devices as they arrive and runs them until the scenario's duration has passed
    /// or `shutdown` completes.
    async fn drive(
        &mut self,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        quit: CancellationToken,
    ) -> Result<Driven, FleetError> {
        let elapsed_before = self.soak.as_ref().map(|o| o.elapsed_before());
        let (options, duration) = (self.options, self.scenario.duration.0);
        let timing = Timing::decide(
            (options.start_at, options.shard),
            (elapsed_before.unwrap_or_default(), duration),
            &self.stop,
            shutdown.as_mut(),
        )
        .await?;
        let watcher = self.watch(&timing, quit);
        self.board.set_start(timing.start.into_std());
        self.start_page(&timing)?;
        let log = self.options.interval_log.as_deref();
        let soak = self.soak.as_mut();
        let elapsed = timing.begun.saturating_duration_since(timing.start);
        let mut sampling = Sampling::start(self.scenario, log, timing.start, elapsed, soak)?;
        let journal = self.soak.as_ref().map(|o| o.journal());
        let (services, cohorts) = (self.services.clone(), self.fleet.names.len());
        let mut roster = Roster::new(services, &self.stop, journal, cohorts, self.fleet.planned);
        // Devices start when their arrival process says (see `arrivals`): their latency counts
        // from that instant, and one that starts late is counted as late, never silently shifted.
        let (due_tx, mut due) = tokio::sync::mpsc::unbounded_channel();
        let processes = self.fleet.take_processes();
        let arrivals = arrivals::start(processes, timing.start, &self.stop, due_tx);
        for (cohort, spec) in self.fleet.take_known() {
            roster.bring_back(cohort, spec, timing.begun);
        }
        let mut arrivals_done = self.stop.is_cancelled();
        // Interrupted during bulk registration: the shutdown future has completed already.
        let mut interrupted = self.stop.is_cancelled();
        let mut arrivals = arrivals;
        let mut arrival_panics = 0;
        while !interrupted {
            let next_event = self.events.next_at(timing.start);
            let next_fault = self.faults.next_at(timing.start);
            tokio::select! {
                _ = shutdown.as_mut() => interrupted = true,
                _ = tokio::time::sleep_until(timing.end) => break,
                _ = tokio::time::sleep_until(next_event.unwrap_or(timing.end)),
                    if next_event.is_some() => {
                    let (kind, what) = self.events.label();
                    let n = self.events.fire(roster.started(), self.operator.as_mut());
                    self.board.event(kind, format!("{what}: {n} devices"));
                }
                _ = tokio::time::sleep_until(next_fault.unwrap_or(timing.end)),
                    if next_fault.is_some() => {
                    self.faults.fire(timing.start, self.emulators.as_ref());
                }
                Some(joined) = arrivals.join_next(), if !arrivals.is_empty() => {
                    arrival_panics += self.arrival_ended(joined);
                }
                tick = sampling.next() => sampling.take(tick, &self.recorder),
                Some(done) = roster.next_finished(), if roster.is_running() => roster.finished(done),
                d = due.recv(), if !arrivals_done => match d {
                    Some(d) => roster.arrive(d, &self.recorder),
                    None => arrivals_done = true,
                },
            }
        }
        // The picture at the end of the scenario, before the devices drain.
        self.board.freeze();
        Ok(Driven {
            timing,
            watcher,
            sampling,
            roster,
            arrivals,
            arrival_panics,
            interrupted,
        })
    }

    /// Serves the live web page (`--web`), if asked for.
    fn start_page(&mut self, timing: &Timing) -> Result<(), FleetError> {
        if let Some(listener) = &self.options.web_listener {
            let (recorder, board) = (self.recorder.clone(), self.board.clone());
            let start = timing.start.into_std();
            self.page = Some(web::start(listener, self.scenario, recorder, board, start)?);
        }
        Ok(())
    }

    /// An arrival process ended: a panic is counted (as `arrival.late/panic`) when it happens,
    /// not only when the run winds down. Returns 1 for a panic.
    fn arrival_ended(&self, joined: Result<(), tokio::task::JoinError>) -> u64 {
        match joined {
            Err(e) if e.is_panic() => {
                tracing::error!(error = %e, "an arrival process panicked");
                self.recorder
                    .error(crate::metrics::Phase::ArrivalLate, "panic");
                1
            }
            _ => 0,
        }
    }

    /// The live view or progress lines of this run (none when progress is off).
    fn watch(&self, timing: &Timing, quit: CancellationToken) -> Option<crate::ui::Watcher> {
        let watch = crate::ui::Watch {
            recorder: self.recorder.clone(),
            title: self.scenario.name.clone(),
            start: timing.start.into_std(),
            duration: self.scenario.duration.0,
            planned: self.fleet.planned,
            quit,
        };
        crate::ui::start(self.options.progress, watch)
    }

    /// Stops the arrivals and the devices (each gets [`DRAIN`] to disconnect cleanly), then the
    /// metrics endpoint, the emulators and the soak state (after a last checkpoint).
    async fn wind_down(&mut self, driven: Driven) -> Ended {
        let Driven {
            timing,
            watcher,
            mut sampling,
            mut roster,
            mut arrivals,
            mut arrival_panics,
            interrupted,
        } = driven;
        self.stop.cancel();
        arrivals.abort_all();
        while let Some(joined) = arrivals.join_next().await {
            arrival_panics += self.arrival_ended(joined);
        }
        if let Some(operator) = &mut self.operator {
            operator.finish().await;
        }
        roster.drain(DRAIN).await;
        drop(watcher);
        let wall = timing.start.elapsed().as_secs_f64();
        // After the devices, before the emulators: messages still on their way get `grace`.
        let backend = match self.backend.take() {
            Some(b) => Some(b.finish(self.scenario.backend.grace.0).await),
            None => None,
        };
        if let Some(metrics) = self.metrics.take() {
            metrics.stop().await;
        }
        let mut listeners = report::EmulatorListeners::default();
        let (ca, hubs, dps) = match self.emulators.take() {
            Some(e) => {
                let hubs = std::iter::once(e.hub.clone())
                    .chain(e.extra_hubs.iter().map(|x| x.hub.clone()))
                    .collect();
                let dps = e.dps.as_ref().map(|d| d.emulator.clone());
                let ca = Some(e.ca.clone());
                let amqp = e.amqp.clone();
                e.shutdown().await;
                listeners.amqp = amqp.listener_stats();
                listeners.dps = dps.as_ref().map(|d| d.listener_stats()).unwrap_or_default();
                (ca, hubs, dps)
            }
            None => (None, Vec::new(), None),
        };
        if let Some(soak) = self.soak.take() {
            let elapsed = timing.start.elapsed().min(self.scenario.duration.0);
            sampling.checkpoint(&self.recorder, elapsed);
            resume::close(soak, self.options.state.as_ref()).await;
        }
        Ended {
            backend,
            timing,
            wall,
            sampling,
            roster,
            interrupted,
            arrival_panics,
            ca,
            hubs,
            dps,
            listeners,
        }
    }

    /// The report, from one last snapshot of the recorder, and the devices' own reports.
    fn finish(self, ended: Ended) -> Result<RunOutcome, FleetError> {
        // One snapshot for all, so the interval log and the timeline sum exactly to the report.
        let snapshot = self.recorder.snapshot();
        let timeline = ended.sampling.finish(&snapshot);
        let sources = report::Sources {
            scenario: self.scenario,
            shard: self.options.shard,
            recorder: &self.recorder,
            started_at: ended.timing.started_at,
            start_barrier: ended.timing.barrier,
            wall: ended.wall,
            interrupted: ended.interrupted,
            fleet: &self.fleet,
            roster: &ended.roster,
            hubs: &ended.hubs,
            dps: ended.dps.as_ref(),
            keys: &self.services.keys,
            operator: self.operator.as_ref().map(operator::Operator::report),
            backend: ended.backend,
            faults: self.faults.done.clone(),
        };
        let mut report = report::build(&sources, snapshot, timeline)?;
        report.panics = report::panics(
            &ended.roster,
            ended.arrival_panics,
            self.operator.as_ref(),
            ended.ca.as_ref(),
            &ended.hubs,
            ended.listeners,
        );
        report.fleet_map = Some(self.board.freeze());
        let mut devices = ended.roster.reports;
        devices.sort_by_key(|r| r.id.clone());
        let mut hubs = ended.hubs.into_iter();
        Ok(RunOutcome {
            report,
            devices,
            ca: ended.ca,
            hub: hubs.next(),
            extra_hubs: hubs.collect(),
            dps: ended.dps,
        })
    }
}

/// The embedded issuing CA the scenario's devices get certificates from.
fn issuing_key(scenario: &Scenario) -> crate::emulator::ca::IssuingKey {
    use crate::emulator::ca::IssuingKey;
    match &scenario.target.value {
        crate::scenario::Target::Embedded(e)
            if e.ca.issuing_ca == crate::scenario::IssuingCaChoice::Rsa =>
        {
            IssuingKey::Rsa2048
        }
        _ => IssuingKey::EcdsaP256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_during_bulk_registration_starts_no_device() {
        let text = r#"
name: interrupted-bulk
duration: 30s
target:
  embedded: {}
fleet:
  devices: 300
  arrival_rate: 100/s
  registration: bulk
"#;
        let scenario = crate::scenario::parse(text, std::path::Path::new("bulk.yaml")).unwrap();
        // The signal has come already: the run stops at once (the bulk registration is cut
        // short, the completed signal is not waited on again) and still reports.
        let options = RunOptions::default();
        let run = run(&scenario, &options, std::future::ready(()));
        let outcome = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("an interrupted run ends by itself")
            .unwrap();
        assert!(outcome.report.interrupted);
        assert_eq!(outcome.report.devices.planned, 300);
        assert_eq!(outcome.report.devices.started, 0);
        assert!(outcome.devices.is_empty());
    }
}
