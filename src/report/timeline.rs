//! The run over time: every `report.interval` the run loop hands the recorder's cumulative
//! snapshot to a [`Sampler`], which appends one [`TimelinePoint`]: device counts per state,
//! cumulative messages and errors, and per phase what happened in that interval (ok and not-ok
//! counts, p50/p99 of the ok latencies, and the interval's ok histogram itself, base64 like the
//! phase table's, so shard timelines merge exactly). An interval is the difference of two
//! cumulative snapshots (`Histogram::subtract`), exact because counts only grow; the last point
//! is taken from the same snapshot as the report, so the intervals sum to its totals.
//!
//! Merging ([`merge`]) aligns the shards' points by interval index: counts and states add, the
//! interval histograms add and their percentiles are computed again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ReportError;
use super::stats::{self, HistogramMap};
use crate::metrics::{Outcome, Snapshot};

/// The points of a run, one per interval.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    /// The scenario's `report.interval`, in seconds.
    pub interval_seconds: f64,
    pub points: Vec<TimelinePoint>,
}

/// The state of the run at the end of one interval.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimelinePoint {
    /// End of the interval, in seconds since the run began (the last one may be shorter).
    pub t: f64,
    /// Devices per state at `t` (`pending`, `online`, …).
    pub devices: BTreeMap<String, i64>,
    /// Telemetry messages since the start: sent, acked, failed.
    pub messages_sent: u64,
    pub messages_acked: u64,
    pub messages_failed: u64,
    /// Errors since the start, all kinds.
    pub errors: u64,
    /// Per phase (only those with something in the interval): what happened in the interval.
    pub phases: BTreeMap<String, IntervalPhase>,
}

/// One phase in one interval.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalPhase {
    pub ok: u64,
    /// Every other outcome (error, timeout, throttled, rejected).
    pub not_ok: u64,
    /// Percentiles of the interval's ok latencies (from the intended start), when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// The interval's ok histogram (µs), base64 of V2 + DEFLATE as in the phase table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hdr: Option<String>,
}

impl IntervalPhase {
    /// Fills in the percentiles and the encoded histogram from `h` (the interval's ok samples).
    fn set_latency(&mut self, h: &hdrhistogram::Histogram<u64>) -> Result<(), ReportError> {
        if h.is_empty() {
            return Ok(());
        }
        self.p50_ms = Some(h.value_at_quantile(0.50) as f64 / 1000.0);
        self.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
        self.hdr = Some(stats::encode(h)?);
        Ok(())
    }
}

/// Builds the timeline during a run: one [`Sampler::sample`] per interval.
pub struct Sampler {
    run_start: Instant,
    timeline: Timeline,
    previous: HistogramMap,
}

impl Sampler {
    pub fn new(run_start: Instant, interval: Duration) -> Self {
        Self {
            run_start,
            timeline: Timeline {
                interval_seconds: interval.as_secs_f64(),
                points: Vec::new(),
            },
            previous: HistogramMap::new(),
        }
    }

    /// Appends the point for the interval ending `now`. Never fails the run: a histogram that
    /// cannot be subtracted or encoded (counts only grow, so it should not happen) loses its
    /// percentiles for that interval, not its counts.
    pub fn sample(&mut self, snapshot: &Snapshot, now: Instant) {
        let t = now.saturating_duration_since(self.run_start).as_secs_f64();
        let mut phases: BTreeMap<String, IntervalPhase> = BTreeMap::new();
        for (key @ (phase, outcome), h) in &snapshot.latency {
            let before = self.previous.get(key);
            let count = h.len() - before.map_or(0, |b| b.len().min(h.len()));
            if count == 0 {
                continue;
            }
            let entry = phases.entry(phase.name().to_string()).or_default();
            if *outcome != Outcome::Ok {
                entry.not_ok += count;
                continue;
            }
            entry.ok += count;
            let mut interval = h.clone();
            let fine = match before {
                Some(b) => interval.subtract(b).is_ok(),
                None => true,
            };
            if fine && entry.set_latency(&interval).is_err() {
                entry.p50_ms = None;
                entry.p99_ms = None;
            }
        }
        let last_t = self.timeline.points.last().map_or(0.0, |p| p.t);
        self.timeline.points.push(TimelinePoint {
            t: t.max(last_t),
            devices: snapshot
                .devices
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            messages_sent: snapshot.messages_sent,
            messages_acked: snapshot.messages_acked,
            messages_failed: snapshot.messages_failed,
            errors: snapshot.total_errors(),
            phases,
        });
        self.previous = snapshot.latency.clone();
    }

    pub fn finish(self) -> Timeline {
        self.timeline
    }
}

/// Merges the timelines of several shards, point by point (the i-th interval of every shard).
/// A shard with fewer points keeps its last cumulative figures and device states for the rest
/// (it had finished), with nothing more in its intervals. `None` when a timeline is missing
/// (a report from before timelines) or the intervals differ, since the points then cannot be
/// aligned.
pub fn merge(timelines: &[&Timeline]) -> Result<Option<Timeline>, ReportError> {
    let Some(first) = timelines.first() else {
        return Ok(None);
    };
    if timelines
        .iter()
        .any(|t| t.points.is_empty() || t.interval_seconds != first.interval_seconds)
    {
        return Ok(None);
    }
    let len = timelines.iter().map(|t| t.points.len()).max().unwrap_or(0);
    let mut points = Vec::with_capacity(len);
    for i in 0..len {
        let mut point = TimelinePoint::default();
        let mut histograms: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
        // Phases where some shard had ok samples without a histogram: no exact percentiles.
        let mut incomplete: Vec<String> = Vec::new();
        for timeline in timelines {
            let own = timeline.points.get(i);
            // Past its end, a shard's cumulative figures stay where they ended.
            let Some(p) = own.or(timeline.points.last()) else {
                continue;
            };
            point.t = point.t.max(p.t);
            for (state, n) in &p.devices {
                *point.devices.entry(state.clone()).or_insert(0) += n;
            }
            point.messages_sent += p.messages_sent;
            point.messages_acked += p.messages_acked;
            point.messages_failed += p.messages_failed;
            point.errors += p.errors;
            let Some(p) = own else { continue };
            for (phase, ip) in &p.phases {
                let into = point.phases.entry(phase.clone()).or_default();
                into.ok += ip.ok;
                into.not_ok += ip.not_ok;
                if ip.ok > 0 && ip.hdr.is_none() {
                    incomplete.push(phase.clone());
                }
                if let Some(hdr) = &ip.hdr {
                    let h = stats::decode(hdr)?;
                    match histograms.get_mut(phase) {
                        Some(sum) => sum
                            .add(&h)
                            .map_err(|e| ReportError::Histogram(format!("cannot add: {e:?}")))?,
                        None => {
                            histograms.insert(phase.clone(), h);
                        }
                    }
                }
            }
        }
        for (phase, h) in histograms.iter().filter(|(p, _)| !incomplete.contains(p)) {
            if let Some(ip) = point.phases.get_mut(phase) {
                ip.set_latency(h)?;
            }
        }
        points.push(point);
    }
    Ok(Some(Timeline {
        interval_seconds: first.interval_seconds,
        points,
    }))
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
