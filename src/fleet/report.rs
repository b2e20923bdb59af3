//! The run's report, assembled once the devices have stopped: one function per section, each
//! reading what it needs from the [`Sources`] the run gathered. A new section is one function
//! here (and one field in `Sources` if it needs something the run does not gather yet).

use super::error::FleetError;
use super::health;
use super::plan::Fleet;
use super::roster::Roster;
use super::shard::Shard;
use crate::device::keys::{KeySource, PoolCounts};
use crate::emulator::HubEmulator;
use crate::metrics::{Recorder, Snapshot};
use crate::report::timeline::Timeline;
use crate::report::{CohortCounts, DeviceCounts, KeyPoolCounts, Report};
use crate::scenario::{Scenario, Target};

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
    /// The embedded hub, whose own counts the report compares with the devices'.
    pub hub: Option<&'a HubEmulator>,
    pub keys: &'a KeySource,
    /// What fleetsim as the operator did, if the scenario made it one.
    pub operator: Option<crate::report::operator::OperatorReport>,
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
    report.hub = s.hub.map(|h| health::hub_counts(h.stats()));
    report.certificates = Some(health::certificate_report(
        s.scenario,
        s.recorder,
        &s.roster.reports,
        s.hub,
        health,
    ));
    report.key_pool = s.keys.counts().map(key_pool);
    report.operator = s.operator.clone();
    report.timeline = Some(timeline);
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
