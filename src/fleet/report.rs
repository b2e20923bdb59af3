//! The run's report, assembled once the devices have stopped: one function per section, each
//! reading what it needs from the [`Sources`] the run gathered. A new section is one function
//! here (and one field in `Sources` if it needs something the run does not gather yet).

use std::collections::BTreeMap;

use super::error::FleetError;
use super::health;
use super::plan::Fleet;
use super::roster::Roster;
use super::shard::Shard;
use crate::device::keys::{KeySource, PoolCounts};
use crate::emulator::{DpsEmulator, HubEmulator};
use crate::metrics::{Recorder, Snapshot};
use crate::report::provisioning::{HubShare, ProvisioningReport};
use crate::report::timeline::Timeline;
use crate::report::{CohortCounts, DeviceCounts, KeyPoolCounts, Report};
use crate::scenario::{Provisioning, Scenario, Target};

/// What the report is made from.
pub(super) struct Sources<'a> {
    pub scenario: &'a Scenario,
    pub shard: Shard,
    pub recorder: &'a Recorder,
    /// When the run started (RFC 3339) and how long it took (seconds).
    pub started_at: String,
    /// The start barrier (`--start-at`) and this process's lateness, if it had one.
    pub start_barrier: Option<crate::report::StartBarrier>,
    pub wall: f64,
    /// Stopped by the shutdown signal before its duration.
    pub interrupted: bool,
    pub fleet: &'a Fleet,
    pub roster: &'a Roster,
    /// The embedded hubs (one, or DPS's), whose own counts the report compares with the
    /// devices'.
    pub hubs: &'a [HubEmulator],
    /// The embedded DPS, whose own counts the provisioning section shows.
    pub dps: Option<&'a DpsEmulator>,
    pub keys: &'a KeySource,
    /// What fleetsim as the operator did, if the scenario made it one.
    pub operator: Option<crate::report::operator::OperatorReport>,
    /// What fleetsim as the backend read, if the scenario made it one.
    pub backend: Option<crate::report::backend::BackendReport>,
    /// The faults the run injected, as they happened.
    pub faults: Vec<crate::report::faults::FaultEvent>,
}

/// The report of the run, from its final `snapshot` and `timeline`.
pub(super) fn build(
    s: &Sources,
    snapshot: Snapshot,
    timeline: Timeline,
) -> Result<Report, FleetError> {
    let health = snapshot.certs.clone();
    let target = match &s.scenario.target.value {
        Target::Embedded(_) => "embedded",
        Target::Remote(_) => "remote",
    };
    let mut report = Report::new(
        &s.scenario.name,
        target,
        s.started_at.clone(),
        s.wall,
        snapshot,
    )?;
    report.interrupted = s.interrupted;
    report.devices = devices(s);
    report.shard = (!s.shard.is_whole()).then(|| s.shard.to_string());
    report.start_barrier = s.start_barrier.clone();
    report.cohorts = cohorts(s);
    report.messages.failed = s.roster.reports.iter().map(|r| r.messages_failed).sum();
    report.hub = health::hubs_total(s.hubs);
    report.provisioning = provisioning(s);
    report.certificates = Some(health::certificate_report(
        s.scenario,
        s.recorder,
        &s.roster.reports,
        s.hubs,
        health,
    ));
    report.key_pool = s.keys.counts().map(key_pool);
    report.operator = s.operator.clone();
    report.backend = s.backend.clone();
    report.timeline = Some(timeline);
    let hub_received = report.hub.as_ref().map(|h| h.messages);
    report.qos1 = crate::report::qos1::Qos1Report::new(s.recorder.qos1.counts(), hub_received);
    report.faults = s.faults.clone();
    // Last: the thresholds read the other sections.
    report.thresholds = crate::report::thresholds::evaluate(&s.scenario.thresholds, &report)?;
    Ok(report)
}

fn devices(s: &Sources) -> DeviceCounts {
    let reports = &s.roster.reports;
    let count = |f: fn(&crate::device::DeviceReport) -> bool| {
        reports.iter().filter(|r| f(r)).count() as u64
    };
    DeviceCounts {
        planned: s.fleet.planned,
        started: s.roster.started().len() as u64,
        enrolled: count(|r| r.enrolled),
        connected: count(|r| r.connected),
        renewed: count(|r| r.renewals > 0),
        renewals: reports.iter().map(|r| r.renewals).sum(),
        failed: count(|r| r.failure.is_some()),
        late: s.roster.late,
    }
}

fn cohorts(s: &Sources) -> Vec<CohortCounts> {
    let mut cohorts: Vec<CohortCounts> = s
        .fleet
        .names
        .iter()
        .enumerate()
        .map(|(c, name)| CohortCounts {
            name: name.clone(),
            planned: s.fleet.planned_per_cohort[c],
            started: s.roster.started_per_cohort[c],
            ..CohortCounts::default()
        })
        .collect();
    for (r, &c) in s.roster.reports.iter().zip(&s.roster.report_cohorts) {
        if let Some(counts) = cohorts.get_mut(c) {
            counts.enrolled += u64::from(r.enrolled);
            counts.connected += u64::from(r.connected);
            counts.failed += u64::from(r.failure.is_some());
        }
    }
    cohorts
}

/// What the accept loops of the embedded DPS and AMQP endpoint saw (zero when not running).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct EmulatorListeners {
    pub dps: crate::emulator::listener::ListenerStats,
    pub amqp: crate::emulator::listener::ListenerStats,
}

/// The panics caught at the boundaries of the run's tasks and the embedded emulators' handlers,
/// by where (see `Report::panics`).
pub(super) fn panics(
    roster: &Roster,
    arrivals: u64,
    operator: Option<&super::operator::Operator>,
    ca: Option<&crate::emulator::CaEmulator>,
    hubs: &[HubEmulator],
    listeners: EmulatorListeners,
) -> BTreeMap<String, u64> {
    let mut panics = BTreeMap::new();
    let mut add = |at: String, n: u64| {
        if n > 0 {
            *panics.entry(at).or_insert(0) += n;
        }
    };
    for r in &roster.reports {
        if let Some(phase) = r.panicked_in {
            add(format!("device/{}", phase.name()), 1);
        }
    }
    add("device".into(), roster.task_panics);
    add("arrivals".into(), arrivals);
    for phase in operator.iter().flat_map(|o| &o.panicked) {
        add(format!("operator/{}", phase.name()), 1);
    }
    add(
        "emulator.ca".into(),
        ca.map_or(0, |c| c.listener_stats().panics),
    );
    add(
        "emulator.hub".into(),
        hubs.iter().map(|h| h.listener_stats().panics).sum(),
    );
    add("emulator.dps".into(), listeners.dps.panics);
    add("emulator.amqp".into(), listeners.amqp.panics);
    panics
}

/// DPS's part of the run: the devices' registrations, the devices per assigned hub with each
/// embedded hub's own counts, and the embedded DPS's; none for a registry run.
fn provisioning(s: &Sources) -> Option<ProvisioningReport> {
    if s.scenario.fleet.provisioning() != Provisioning::Dps {
        return None;
    }
    let reports = &s.roster.reports;
    let mut per_hub: BTreeMap<String, u64> = BTreeMap::new();
    for r in reports {
        if let Some(hub) = &r.assigned_hub {
            *per_hub.entry(hub.clone()).or_default() += 1;
        }
    }
    // Embedded hubs no device went to are shown too.
    for h in s.hubs {
        per_hub.entry(h.host_name().to_string()).or_default();
    }
    let hubs = per_hub
        .into_iter()
        .map(|(host, devices)| HubShare {
            received: s
                .hubs
                .iter()
                .find(|h| h.host_name() == host)
                .map(|h| health::hub_received(h.stats())),
            host,
            devices,
        })
        .collect();
    Some(ProvisioningReport {
        service: "dps".into(),
        provisioned: reports.iter().filter(|r| r.provisioned > 0).count() as u64,
        reprovisioned: reports.iter().filter(|r| r.provisioned > 1).count() as u64,
        polls: reports.iter().map(|r| r.provisioning_polls).sum(),
        throttled: reports.iter().map(|r| r.provisioning_throttled).sum(),
        hubs,
        service_counts: s.dps.map(|d| health::dps_counts(d.stats())),
    })
}

/// The key pool's counters as the report keeps them.
fn key_pool(c: PoolCounts) -> KeyPoolCounts {
    KeyPoolCounts {
        kind: c.kind.to_string(),
        from_pool: c.from_pool,
        generated_during_run: c.generated,
        waits: c.waits,
        wait_seconds: c.wait_total_us as f64 / 1e6,
        max_wait_ms: c.wait_max_us as f64 / 1e3,
    }
}
