//! Reading JSON reports back and merging several into one, exactly: histograms are decoded and
//! added (`Histogram::add`, no loss), counters summed. This is how the shards of a run (or runs
//! on several machines) become one report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{ReportError, SCHEMA};
use super::model::{
    CohortCounts, DeviceCounts, HubCounts, KeyPoolCounts, MessageCounts, Report, StartBarrier,
};
use super::stats::{self, HistogramMap};
use super::thresholds;
use super::timeline::Timeline;
use crate::scenario::Threshold;

/// Reads one JSON report and checks its schema.
pub fn read_json(path: &Path) -> Result<Report, ReportError> {
    let shown = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ReportError::Read {
        path: shown(),
        source,
    })?;
    // Look at the schema first, so that a report of another version says so instead of
    // failing on whichever field changed.
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| ReportError::Parse {
            path: shown(),
            source,
        })?;
    let found = value.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    if found != SCHEMA {
        return Err(ReportError::Schema {
            path: shown(),
            found: found.into(),
        });
    }
    serde_json::from_value(value).map_err(|source| ReportError::Parse {
        path: shown(),
        source,
    })
}

/// The report files named by `inputs`: files as given, directories as every `*.json` directly in
/// them (sorted, so the merge order and `merged_from` are stable).
pub fn report_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ReportError> {
    let mut files = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            files.push(input.clone());
            continue;
        }
        let entries = std::fs::read_dir(input).map_err(|source| ReportError::Read {
            path: input.display().to_string(),
            source,
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
            .collect();
        if found.is_empty() {
            return Err(ReportError::NoReports(format!(
                "{} has no *.json files",
                input.display()
            )));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Reads every report named by `inputs` (see [`report_files`]) and merges them.
pub fn merge_files(inputs: &[PathBuf]) -> Result<Report, ReportError> {
    let files = report_files(inputs)?;
    let reports = files
        .iter()
        .map(|f| read_json(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut merged = merge(&reports)?;
    merged.merged_from = files.iter().map(|f| f.display().to_string()).collect();
    Ok(merged)
}

/// Merges reports: histograms added, counters summed, the earliest start and the longest wall
/// time kept, interrupted if any was, timelines added interval by interval.
pub fn merge(reports: &[Report]) -> Result<Report, ReportError> {
    let Some(first) = reports.first() else {
        return Err(ReportError::NoReports("none given".into()));
    };
    let mut latency = HistogramMap::new();
    let mut uncorrected = HistogramMap::new();
    let mut errors = BTreeMap::new();
    let mut panics = BTreeMap::new();
    let mut retries = BTreeMap::new();
    let mut devices = DeviceCounts::default();
    let mut messages = MessageCounts::default();
    let mut hub: Option<HubCounts> = None;
    let mut cohorts: Vec<CohortCounts> = Vec::new();
    for r in reports {
        add_cohorts(&mut cohorts, &r.cohorts);
        let (l, u) = r.histograms()?;
        for (key, h) in l {
            stats::add_into(&mut latency, key, h)?;
        }
        for (key, h) in u {
            stats::add_into(&mut uncorrected, key, h)?;
        }
        for (kind, n) in &r.errors {
            *errors.entry(kind.clone()).or_insert(0) += n;
        }
        for (at, n) in &r.panics {
            *panics.entry(at.clone()).or_insert(0) += n;
        }
        for (key, n) in &r.retries {
            *retries.entry(key.clone()).or_insert(0) += n;
        }
        add_devices(&mut devices, &r.devices);
        messages.sent += r.messages.sent;
        messages.acked += r.messages.acked;
        messages.failed += r.messages.failed;
        messages.bytes += r.messages.bytes;
        messages.meters += r.messages.meters;
        if let Some(h) = &r.hub {
            add_hub(hub.get_or_insert_with(HubCounts::default), h);
        }
    }
    let mut merged = Report {
        schema: SCHEMA.into(),
        scenario: distinct(reports.iter().map(|r| r.scenario.as_str())),
        target: distinct(reports.iter().map(|r| r.target.as_str())),
        started_at: reports
            .iter()
            .map(|r| r.started_at.clone())
            .min()
            .unwrap_or_else(|| first.started_at.clone()),
        wall_seconds: reports.iter().map(|r| r.wall_seconds).fold(0.0, f64::max),
        interrupted: reports.iter().any(|r| r.interrupted),
        merged_from: Vec::new(),
        shard: None,
        start_barrier: merge_barriers(reports),
        // Shards of one run share its id (`--run-id`); a merge of different runs has none.
        run_id: Some(first.run_id.clone())
            .filter(|id| reports.iter().all(|r| r.run_id == *id))
            .flatten(),
        devices,
        cohorts,
        messages,
        phases: stats::phase_stats(&latency, &uncorrected)?,
        errors,
        panics,
        retries,
        thresholds: Vec::new(),
        hub,
        provisioning: super::provisioning::merge(
            reports.iter().filter_map(|r| r.provisioning.as_ref()),
        ),
        key_pool: merge_key_pools(reports),
        certificates: super::certificates::merge(
            reports.iter().filter_map(|r| r.certificates.as_ref()),
        ),
        operator: super::operator::merge(reports.iter().filter_map(|r| r.operator.as_ref())),
        backend: super::backend::merge(reports.iter().filter_map(|r| r.backend.as_ref())),
        timeline: merge_timelines(reports)?,
        // Each shard drew its own devices: a merged run has no one map to replay.
        fleet_map: None,
        qos1: super::qos1::merge(reports.iter().filter_map(|r| r.qos1.as_ref())),
        faults: merge_faults(reports),
    };
    // The inputs' thresholds, checked again against the merged figures: a p99 that passed on
    // every shard can still fail on the whole.
    merged.thresholds = thresholds::evaluate(&thresholds_of(reports)?, &merged)?;
    Ok(merged)
}

/// The thresholds the reports were checked against, each once.
fn thresholds_of(reports: &[Report]) -> Result<Vec<Threshold>, ReportError> {
    let mut texts: Vec<&str> = Vec::new();
    for t in reports.iter().flat_map(|r| &r.thresholds) {
        if !texts.contains(&t.threshold.as_str()) {
            texts.push(&t.threshold);
        }
    }
    texts
        .iter()
        .map(|t| t.parse::<Threshold>().map_err(ReportError::Threshold))
        .collect()
}

/// The key pool counts of the reports that used the pool, added; none if none did.
fn merge_key_pools(reports: &[Report]) -> Option<KeyPoolCounts> {
    reports.iter().filter_map(|r| r.key_pool.as_ref()).fold(
        None,
        |acc: Option<KeyPoolCounts>, k| {
            let mut acc = acc.unwrap_or_default();
            acc.add(k);
            Some(acc)
        },
    )
}

/// The shards' start barrier: their barrier times (one when they agree), the latest shard's
/// lateness and every late shard; none when no shard had a barrier.
fn merge_barriers(reports: &[Report]) -> Option<StartBarrier> {
    let barriers: Vec<&StartBarrier> = reports
        .iter()
        .filter_map(|r| r.start_barrier.as_ref())
        .collect();
    if barriers.is_empty() {
        return None;
    }
    Some(StartBarrier {
        at: distinct(barriers.iter().map(|b| b.at.as_str())),
        late_seconds: barriers.iter().map(|b| b.late_seconds).fold(0.0, f64::max),
        late_shards: barriers
            .iter()
            .flat_map(|b| b.late_shards.iter().cloned())
            .collect(),
    })
}

/// The shards' timelines merged by interval index (see [`super::timeline::merge`]); none when a
/// shard has none or the intervals differ.
fn merge_timelines(reports: &[Report]) -> Result<Option<Timeline>, ReportError> {
    let timelines: Option<Vec<&Timeline>> = reports.iter().map(|r| r.timeline.as_ref()).collect();
    match timelines {
        Some(t) => super::timeline::merge(&t),
        None => Ok(None),
    }
}

/// `a` when every value is `a`, else the distinct values joined with `+`.
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join("+")
}

fn add_devices(into: &mut DeviceCounts, d: &DeviceCounts) {
    into.planned += d.planned;
    into.started += d.started;
    into.enrolled += d.enrolled;
    into.connected += d.connected;
    into.renewed += d.renewed;
    into.renewals += d.renewals;
    into.failed += d.failed;
    into.late += d.late;
}

/// Sums cohorts by name, keeping the order they first appear in.
fn add_cohorts(into: &mut Vec<CohortCounts>, cohorts: &[CohortCounts]) {
    for c in cohorts {
        let i = match into.iter().position(|m| m.name == c.name) {
            Some(i) => i,
            None => {
                into.push(CohortCounts {
                    name: c.name.clone(),
                    ..CohortCounts::default()
                });
                into.len() - 1
            }
        };
        let m = &mut into[i];
        m.planned += c.planned;
        m.started += c.started;
        m.enrolled += c.enrolled;
        m.connected += c.connected;
        m.failed += c.failed;
    }
}

fn add_hub(into: &mut HubCounts, h: &HubCounts) {
    into.messages += h.messages;
    into.bytes += h.bytes;
    into.meters += h.meters;
    into.connects += h.connects;
    into.refused += h.refused;
    into.drops += h.drops;
    into.devices_registered += h.devices_registered;
    into.throttled += h.throttled;
}

/// Every shard's faults, by time (each shard injected its own into its own emulators).
fn merge_faults(reports: &[Report]) -> Vec<super::faults::FaultEvent> {
    let mut faults: Vec<_> = reports.iter().flat_map(|r| r.faults.clone()).collect();
    faults.sort_by(|a, b| a.at_seconds.total_cmp(&b.at_seconds));
    faults
}
