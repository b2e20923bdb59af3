//! What the page is sent: [`Meta`] once (title, cohorts, duration), the timeline so far once,
//! then a [`Frame`] per tick. A frame costs the same to build and to send whatever the fleet's
//! size, but for its state array: one byte per device, base64, encoded once per tick for every
//! watcher. The aggregates are the recorder's (the same [`TimelinePoint`] the report's timeline
//! holds, without its histograms), so the live page and the replay of a report draw from the same
//! shapes.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metrics::board::{BoardEvent, MapCohort};
use crate::report::ThresholdResult;
use crate::report::timeline::TimelinePoint;

/// Buckets of the certificate time-to-expiry distribution.
pub const EXPIRY_BUCKETS: usize = 10;

/// Sent once, when the page opens.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub title: String,
    pub duration_s: f64,
    pub cohorts: Vec<MapCohort>,
    /// State names, by the byte that stands for them in [`Frame::states`].
    pub state_names: Vec<&'static str>,
    /// True when the page shows a finished run's report.
    pub replay: bool,
}

/// One update of the page.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// Seconds since the run began.
    pub t: f64,
    /// The run's duration has passed: this is the final picture.
    pub done: bool,
    /// Base64 of one byte per device (slot order): its state's index in `Meta::state_names`.
    pub states: String,
    /// The recorder's own device-state gauges (live), or the map's counts (replay).
    pub gauges: BTreeMap<String, i64>,
    /// The latest timeline point (the interval just ended).
    pub point: Option<TimelinePoint>,
    /// `phase/kind` → count since the start.
    pub errors: BTreeMap<String, u64>,
    pub thresholds: Vec<ThresholdResult>,
    /// The thresholds are the report's verdict (the run has ended and been reported); before,
    /// they are evaluated on what was recorded so far and figures only the end knows are missing.
    pub verdict: bool,
    pub expiry: ExpiryHistogram,
    pub events: Vec<BoardEvent>,
}

/// How long the held certificates have left: `counts[i]` certificates expire within
/// `(i·width, (i+1)·width]` seconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ExpiryHistogram {
    pub width_s: f64,
    pub counts: Vec<u64>,
    /// Certificates already past notAfter.
    pub expired: u64,
    /// Devices holding no certificate (yet).
    pub none: u64,
}

/// Now as Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The distribution of `expiry` (notAfter, Unix seconds, 0: none) seen at `now`.
pub fn expiry_histogram(expiry: &[u32], now: u64) -> ExpiryHistogram {
    let mut h = ExpiryHistogram {
        counts: vec![0; EXPIRY_BUCKETS],
        ..Default::default()
    };
    let left: Vec<u64> = expiry
        .iter()
        .filter_map(|&e| match e {
            0 => {
                h.none += 1;
                None
            }
            e if u64::from(e) <= now => {
                h.expired += 1;
                None
            }
            e => Some(u64::from(e) - now),
        })
        .collect();
    let longest = left.iter().copied().max().unwrap_or(0);
    // Whole seconds, at least one, so every certificate falls in a bucket.
    let width = longest.div_ceil(EXPIRY_BUCKETS as u64).max(1);
    h.width_s = width as f64;
    for l in left {
        let i = ((l.saturating_sub(1)) / width) as usize;
        h.counts[i.min(EXPIRY_BUCKETS - 1)] += 1;
    }
    h
}

/// `point` without its encoded histograms (the page needs counts and percentiles only).
pub fn light(point: &TimelinePoint) -> TimelinePoint {
    let mut p = point.clone();
    for phase in p.phases.values_mut() {
        phase.hdr = None;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_buckets_cover_every_certificate() {
        let now = 1_000;
        let h = expiry_histogram(&[0, 900, 1_000, 1_001, 1_050, 1_100], now);
        assert_eq!(h.none, 1);
        assert_eq!(h.expired, 2);
        assert_eq!(h.width_s, 10.0);
        assert_eq!(h.counts.iter().sum::<u64>(), 3);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[4], 1);
        assert_eq!(h.counts[9], 1);
    }
}
