//! The process-wide recorder shared by all device tasks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{DeviceState, Outcome, Phase};

const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 3_600_000_000;
const SIGFIG: u8 = 3;

pub struct Recorder {
    /// Indexed by phase × outcome. A plain mutex is enough at today's event rates (one short
    /// critical section per event); per-thread histograms merged on a tick come with the live view.
    histograms: Vec<Mutex<Histogram<u64>>>,
    messages_sent: AtomicU64,
    messages_acked: AtomicU64,
    errors: Mutex<BTreeMap<(Phase, String), u64>>,
    states: [AtomicI64; DeviceState::ALL.len()],
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .expect("static histogram bounds are valid")
}

impl Recorder {
    pub fn new() -> Self {
        let n = Phase::ALL.len() * Outcome::ALL.len();
        Self {
            histograms: (0..n).map(|_| Mutex::new(new_histogram())).collect(),
            messages_sent: AtomicU64::new(0),
            messages_acked: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            states: Default::default(),
        }
    }

    /// Records one operation of `phase` that was due at `intended_start` and ended at `end`.
    pub fn record(
        &self,
        phase: Phase,
        outcome: Outcome,
        intended_start: impl Into<Instant>,
        end: impl Into<Instant>,
    ) {
        let us = end
            .into()
            .saturating_duration_since(intended_start.into())
            .as_micros() as u64;
        let slot = phase.index() * Outcome::ALL.len() + outcome.index();
        let mut h = self.histograms[slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        h.saturating_record(us.clamp(LOWEST_US, HIGHEST_US));
    }

    /// Counts a failure of `phase` by kind (`tls`, `http_401`, `connack_5`, ...).
    pub fn error(&self, phase: Phase, kind: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry((phase, kind.to_string())).or_default() += 1;
    }

    pub fn message_sent(&self) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn message_acked(&self) {
        self.messages_acked.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves one device from `from` to `to` (pass `None` for a device that just appeared).
    pub fn transition(&self, from: Option<DeviceState>, to: DeviceState) {
        if let Some(from) = from {
            self.states[from as usize].fetch_sub(1, Ordering::Relaxed);
        }
        self.states[to as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut phases = Vec::new();
        for phase in Phase::ALL {
            for outcome in Outcome::ALL {
                let slot = phase.index() * Outcome::ALL.len() + outcome.index();
                let h = self.histograms[slot]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if h.is_empty() {
                    continue;
                }
                let ms = |us: u64| us as f64 / 1000.0;
                phases.push(PhaseStats {
                    phase: phase.name(),
                    outcome: outcome.name(),
                    count: h.len(),
                    mean_ms: h.mean() / 1000.0,
                    p50_ms: ms(h.value_at_quantile(0.50)),
                    p90_ms: ms(h.value_at_quantile(0.90)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    p999_ms: ms(h.value_at_quantile(0.999)),
                    // The histogram's max is rounded to its bucket's top; report the highest
                    // equivalent value so that max is never below p99.9.
                    max_ms: ms(h.highest_equivalent(h.max())),
                });
            }
        }
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((phase, kind), n)| (format!("{}/{kind}", phase.name()), *n))
            .collect();
        let devices = DeviceState::ALL
            .iter()
            .map(|s| (s.name(), self.states[*s as usize].load(Ordering::Relaxed)))
            .collect();
        Snapshot {
            phases,
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_acked: self.messages_acked.load(Ordering::Relaxed),
            errors,
            devices,
        }
    }
}

/// Percentiles of one phase × outcome, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseStats {
    pub phase: &'static str,
    pub outcome: &'static str,
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub phases: Vec<PhaseStats>,
    pub messages_sent: u64,
    pub messages_acked: u64,
    /// `phase/kind` → count.
    pub errors: BTreeMap<String, u64>,
    /// Device-state gauges.
    pub devices: BTreeMap<&'static str, i64>,
}

impl Snapshot {
    pub fn count(&self, phase: Phase, outcome: Outcome) -> u64 {
        self.phases
            .iter()
            .find(|p| p.phase == phase.name() && p.outcome == outcome.name())
            .map_or(0, |p| p.count)
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_from_intended_start_and_keeps_max_above_p999() {
        let r = Recorder::new();
        let t0 = Instant::now();
        for ms in 1..=1000u64 {
            r.record(
                Phase::MqttPublish,
                Outcome::Ok,
                t0,
                t0 + Duration::from_millis(ms),
            );
        }
        r.error(Phase::CaIssue, "http_500");
        r.error(Phase::CaIssue, "http_500");
        let s = r.snapshot();
        let p = &s.phases[0];
        assert_eq!((p.phase, p.outcome, p.count), ("mqtt.publish", "ok", 1000));
        assert!((p.p50_ms - 500.0).abs() < 1.0, "p50 {}", p.p50_ms);
        assert!(p.max_ms >= p.p999_ms && p.max_ms >= 1000.0);
        assert_eq!(s.errors["ca.issue/http_500"], 2);
        assert_eq!(s.count(Phase::MqttPublish, Outcome::Ok), 1000);
    }
}
