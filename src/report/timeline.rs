//! The run over time: every `report.interval` the run loop hands the recorder's cumulative
//! snapshot to a [`Sampler`], which appends one [`TimelinePoint`]: device counts per state,
//! cumulative messages and errors, and per phase what happened in that interval (ok and not-ok
//! counts, p50/p99 of the ok latencies, and the interval's ok histogram itself, base64 like the
//! phase table's, so shard timelines merge exactly). An interval is the difference of two
//! cumulative snapshots (`Histogram::subtract`), exact because counts only grow; the last point
//! is taken from the same snapshot as the report, so the intervals sum to its totals.
//!
//! Memory stays flat on long soaks: at [`MAX_POINTS`] points, neighbours are joined and the
//! interval doubles (`Timeline::coarsen`); joined intervals add their histograms, so they stay
//! exact too.
//!
//! Merging ([`merge`]) aligns the shards' points by interval index: counts and states add, the
//! interval histograms add and their percentiles are computed again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::ReportError;
use super::stats::{self, HistogramMap};
use crate::metrics::{Outcome, Snapshot};

/// The most points a run's timeline holds: when it has this many, neighbours are joined (see
/// [`Timeline::coarsen`]), so a run keeps between half and all of this many. Even, so that
/// every point finds a partner.
pub const MAX_POINTS: usize = 720;

/// The points of a run, one per interval (which doubles each time the points are coarsened).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    /// The scenario's `report.interval` in seconds, doubled each time the points were joined.
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
    /// Hub identities per authentication type at `t` (`sas`, `x509`): only in runs with SAS
    /// devices, where a migration moves them from one to the other.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identities: BTreeMap<String, i64>,
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

/// Adds up the phases of several intervals (shards' same interval, or neighbouring intervals
/// of one run): counts add, and the ok histograms add so the percentiles stay exact. A phase
/// where some interval had ok samples without a histogram loses its percentiles.
#[derive(Default)]
struct PhaseSums {
    phases: BTreeMap<String, IntervalPhase>,
    histograms: BTreeMap<String, hdrhistogram::Histogram<u64>>,
    incomplete: Vec<String>,
}

impl PhaseSums {
    fn add(&mut self, phases: &BTreeMap<String, IntervalPhase>) -> Result<(), ReportError> {
        for (phase, ip) in phases {
            let into = self.phases.entry(phase.clone()).or_default();
            into.ok += ip.ok;
            into.not_ok += ip.not_ok;
            if ip.ok > 0 && ip.hdr.is_none() {
                self.incomplete.push(phase.clone());
            }
            if let Some(hdr) = &ip.hdr {
                let h = stats::decode(hdr)?;
                match self.histograms.get_mut(phase) {
                    Some(sum) => sum
                        .add(&h)
                        .map_err(|e| ReportError::Histogram(format!("cannot add: {e:?}")))?,
                    None => {
                        self.histograms.insert(phase.clone(), h);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BTreeMap<String, IntervalPhase>, ReportError> {
        for (phase, h) in &self.histograms {
            if self.incomplete.contains(phase) {
                continue;
            }
            if let Some(ip) = self.phases.get_mut(phase) {
                ip.set_latency(h)?;
            }
        }
        Ok(self.phases)
    }
}

impl Timeline {
    /// Halves the number of points by joining neighbours (1st with 2nd, 3rd with 4th, …) and
    /// doubles the interval. A joined point holds the later one's states and cumulative figures
    /// and both intervals' phases, so the points still sum to the run's totals.
    pub fn coarsen(&mut self) -> Result<(), ReportError> {
        let points = std::mem::take(&mut self.points);
        let mut joined = Vec::with_capacity(points.len().div_ceil(2));
        let mut pairs = points.into_iter();
        while let Some(first) = pairs.next() {
            let Some(mut second) = pairs.next() else {
                joined.push(first);
                break;
            };
            let mut sums = PhaseSums::default();
            sums.add(&first.phases)?;
            sums.add(&second.phases)?;
            second.phases = sums.finish()?;
            joined.push(second);
        }
        self.points = joined;
        self.interval_seconds *= 2.0;
        Ok(())
    }
}

impl Timeline {
    /// Hub identities per authentication type over the run, for the text report: each type at
    /// the first and the last point, and when the last SAS identity left (runs with SAS devices
    /// only).
    pub fn identities_text(&self) -> Option<String> {
        let first = self.points.iter().find(|p| !p.identities.is_empty())?;
        let last = self.points.last()?;
        let at = |p: &TimelinePoint, k: &str| p.identities.get(k).copied().unwrap_or(0);
        let peak = self.points.iter().map(|p| at(p, "sas")).max().unwrap_or(0);
        let mut s = format!(
            "identities by authentication: sas {} -> {} (at most {peak}), x509 {} -> {}, \
             every {:.0} s",
            at(first, "sas"),
            at(last, "sas"),
            at(first, "x509"),
            at(last, "x509"),
            self.interval_seconds
        );
        let gone = self
            .points
            .iter()
            .rposition(|p| at(p, "sas") > 0)
            .and_then(|i| self.points.get(i + 1));
        if let Some(p) = gone.filter(|_| at(last, "sas") == 0 && peak > 0) {
            s.push_str(&format!("; no SAS identity left by t = {:.0} s", p.t));
        }
        s.push('\n');
        Some(s)
    }
}

/// Builds the timeline during a run: one [`Sampler::sample`] per interval.
pub struct Sampler {
    run_start: Instant,
    timeline: Timeline,
    /// The cumulative histograms at the end of the last complete point.
    boundary: HistogramMap,
    /// How many samples make one point (doubles each time the timeline is coarsened).
    per_point: usize,
    /// How many samples the last point holds so far, while it is not complete.
    open: usize,
}

impl Sampler {
    pub fn new(run_start: Instant, interval: Duration) -> Self {
        Self {
            run_start,
            timeline: Timeline {
                interval_seconds: interval.as_secs_f64(),
                points: Vec::new(),
            },
            boundary: HistogramMap::new(),
            per_point: 1,
            open: 0,
        }
    }

    /// Continues `previous` (a resumed run's timeline), whose last point ended when the
    /// recorder held `boundary`: the first new point covers everything since then.
    pub fn resume(
        run_start: Instant,
        interval: Duration,
        previous: Timeline,
        boundary: HistogramMap,
    ) -> Self {
        let base = interval.as_secs_f64();
        // Coarsened timelines hold 2^k samples per point.
        let mut per_point = 1;
        while base > 0.0 && (per_point as f64) * base < previous.interval_seconds - 1e-9 {
            per_point *= 2;
        }
        Self {
            run_start,
            timeline: previous,
            boundary,
            per_point,
            open: 0,
        }
    }

    /// The timeline so far.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Records the interval ending `now`: a new point, or (once the timeline has been coarsened)
    /// the growing last point, which always covers everything since the last complete point.
    /// Never fails the run: a histogram that cannot be subtracted or encoded (counts only grow,
    /// so it should not happen) loses its percentiles for that interval, not its counts.
    pub fn sample(&mut self, snapshot: &Snapshot, now: Instant) {
        let t = now.saturating_duration_since(self.run_start).as_secs_f64();
        let mut phases: BTreeMap<String, IntervalPhase> = BTreeMap::new();
        for (key @ (phase, outcome), h) in &snapshot.latency {
            let before = self.boundary.get(key);
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
        if self.open > 0 {
            self.timeline.points.pop();
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
            identities: snapshot
                .identities
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        });
        self.open += 1;
        if self.open < self.per_point {
            return;
        }
        self.open = 0;
        self.boundary = snapshot.latency.clone();
        // A soak of days at a 5 s interval would otherwise hold its whole history in memory:
        // at MAX_POINTS complete points, neighbours are joined, so memory stays flat.
        if self.timeline.points.len() >= MAX_POINTS {
            match self.timeline.coarsen() {
                Ok(()) => self.per_point *= 2,
                // Only an undecodable histogram of our own making gets here; keep the points.
                Err(e) => tracing::warn!("timeline points could not be joined: {e}"),
            }
        }
    }

    pub fn finish(self) -> Timeline {
        self.timeline
    }
}

/// Merges the timelines of several shards, point by point (the i-th interval of every shard).
/// A shard with fewer points keeps its last cumulative figures and device states for the rest
/// (it had finished), with nothing more in its intervals. Shards that coarsened a different
/// number of times are brought to the coarsest interval first. `None` when a timeline is missing
/// (a report from before timelines) or the intervals cannot be aligned.
pub fn merge(timelines: &[&Timeline]) -> Result<Option<Timeline>, ReportError> {
    let Some(first) = timelines.first() else {
        return Ok(None);
    };
    if timelines.iter().any(|t| t.points.is_empty()) {
        return Ok(None);
    }
    // A longer shard may have coarsened once more than the others: bring them to its interval.
    let coarsest = timelines
        .iter()
        .map(|t| t.interval_seconds)
        .fold(first.interval_seconds, f64::max);
    let mut aligned: Vec<Timeline> = Vec::with_capacity(timelines.len());
    for t in timelines {
        let mut t = (*t).clone();
        while t.interval_seconds < coarsest {
            t.coarsen()?;
        }
        if t.interval_seconds != coarsest {
            return Ok(None);
        }
        aligned.push(t);
    }
    let timelines: &[Timeline] = &aligned;
    let len = timelines.iter().map(|t| t.points.len()).max().unwrap_or(0);
    let mut points = Vec::with_capacity(len);
    for i in 0..len {
        let mut point = TimelinePoint::default();
        let mut sums = PhaseSums::default();
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
            for (auth, n) in &p.identities {
                *point.identities.entry(auth.clone()).or_insert(0) += n;
            }
            point.messages_sent += p.messages_sent;
            point.messages_acked += p.messages_acked;
            point.messages_failed += p.messages_failed;
            point.errors += p.errors;
            if let Some(p) = own {
                sums.add(&p.phases)?;
            }
        }
        point.phases = sums.finish()?;
        points.push(point);
    }
    Ok(Some(Timeline {
        interval_seconds: coarsest,
        points,
    }))
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
