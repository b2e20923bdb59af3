//! The run's results: a text table for the terminal, a versioned JSON file for machines that
//! carries every histogram losslessly, so the reports of several shards merge exactly
//! ([`merge`]), an interval log ([`hlog`]), the run over time ([`timeline`], sampled every
//! `report.interval` whether or not the log is written), a self-contained HTML page ([`html`],
//! its time charts in [`timecharts`]) and the thresholds' verdicts ([`thresholds`]).

pub mod certificates;
pub mod hlog;
pub mod html;
pub mod merge;
pub mod stats;
pub mod thresholds;
pub mod timecharts;
pub mod timeline;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use merge::{merge, merge_files, read_json};
pub use stats::{HistogramMap, LatencyStats, PhaseStats};
pub use thresholds::ThresholdResult;
pub use timeline::Timeline;

use crate::emulator::hub::HubStats;
use crate::metrics::Snapshot;

/// The JSON report's `schema` value. Bump it when a field changes meaning or goes away; adding a
/// field with a default does not need a bump.
pub const SCHEMA: &str = "fleetsim.report/v1";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode report: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot read report {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a fleetsim report: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: report schema {found:?} is not supported (expected {SCHEMA:?})")]
    Schema { path: String, found: String },
    #[error("histogram: {0}")]
    Histogram(String),
    #[error("{0}")]
    Threshold(String),
    #[error("no reports to merge: {0}")]
    NoReports(String),
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(super::human_bytes(812), "812 B");
        assert_eq!(super::human_bytes(12_595), "12.3 KiB");
        assert_eq!(super::human_bytes(4_718_592), "4.5 MiB");
        assert_eq!(super::human_bytes(1_288_490_189), "1.2 GiB");
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub scenario: String,
    /// `embedded` or `remote`.
    pub target: String,
    pub started_at: String,
    pub wall_seconds: f64,
    /// True when the run was stopped early (Ctrl-C).
    pub interrupted: bool,
    /// The report files this one was merged from (empty for a single run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// The slice of the fleet this run was (`i/n` of `fleetsim run --shard`); absent for a whole
    /// run and for a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub devices: DeviceCounts,
    /// Devices per cohort (one, `default`, for a scenario without cohorts).
    #[serde(default)]
    pub cohorts: Vec<CohortCounts>,
    pub messages: MessageCounts,
    pub phases: Vec<PhaseStats>,
    /// `phase/kind` → count.
    pub errors: BTreeMap<String, u64>,
    /// `service/endpoint/reason` → retries a client made by itself before its caller saw a
    /// result (EZCA's official 2/4/8 s policy).
    #[serde(default)]
    pub retries: BTreeMap<String, u64>,
    /// The scenario's thresholds, checked against this report.
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
    /// What the embedded hub counted, to compare with `messages`.
    pub hub: Option<HubCounts>,
    /// Certificate health, renewals, swaps and revocations ([`certificates`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<certificates::CertificateReport>,
    /// How the key pool served the run (`certificate.key_source: pool` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pool: Option<KeyPoolCounts>,
    /// The run over time, one point per `report.interval` (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// The key pool's side of a run: keys that were ready on disk, and the keys devices had to wait
/// for because the pool was short (generated during the run), with the time they waited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyPoolCounts {
    pub kind: String,
    pub from_pool: u64,
    pub generated_during_run: u64,
    pub waits: u64,
    pub wait_seconds: f64,
    pub max_wait_ms: f64,
}

impl KeyPoolCounts {
    /// Adds another shard's counts.
    pub fn add(&mut self, other: &KeyPoolCounts) {
        if self.kind.is_empty() {
            self.kind = other.kind.clone();
        } else if self.kind != other.kind {
            self.kind = "mixed".into();
        }
        self.from_pool += other.from_pool;
        self.generated_during_run += other.generated_during_run;
        self.waits += other.waits;
        self.wait_seconds += other.wait_seconds;
        self.max_wait_ms = self.max_wait_ms.max(other.max_wait_ms);
    }
}

/// The embedded hub's totals, as the report keeps them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubCounts {
    pub messages: u64,
    pub bytes: u64,
    /// Meters of the daily quota the messages counted for (4 KB each; 0.5 KB on F1).
    #[serde(default)]
    pub meters: u64,
    pub connects: u64,
    pub refused: u64,
    pub drops: u64,
    pub devices_registered: u64,
    /// Requests the hub refused by a throttle.
    #[serde(default)]
    pub throttled: u64,
}

impl From<HubStats> for HubCounts {
    fn from(h: HubStats) -> Self {
        Self {
            messages: h.messages,
            bytes: h.bytes,
            meters: h.meters,
            connects: h.connects,
            refused: h.refused,
            drops: h.drops,
            devices_registered: h.devices_registered,
            throttled: h.throttled,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCounts {
    pub planned: u64,
    pub started: u64,
    pub enrolled: u64,
    pub connected: u64,
    /// Devices that renewed at least once.
    pub renewed: u64,
    pub renewals: u64,
    pub failed: u64,
    /// Devices that started after their arrival slot (their lateness is the `arrival.late` phase).
    #[serde(default)]
    pub late: u64,
}

/// One cohort's devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CohortCounts {
    pub name: String,
    pub planned: u64,
    pub started: u64,
    pub enrolled: u64,
    pub connected: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageCounts {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    /// Payload bytes of the messages sent.
    #[serde(default)]
    pub bytes: u64,
    /// IoT Hub's 4 KB meters of the messages sent: what they count against a hub's daily
    /// quota (size with properties, at least one meter each).
    #[serde(default)]
    pub meters: u64,
}

/// A byte count as people read it: `812 B`, `12.3 KiB`, `4.5 MiB`, `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Report {
    pub fn new(
        scenario: &str,
        target: &str,
        started_at: String,
        wall_seconds: f64,
        snapshot: Snapshot,
    ) -> Result<Self, ReportError> {
        Ok(Self {
            schema: SCHEMA.into(),
            scenario: scenario.into(),
            target: target.into(),
            started_at,
            wall_seconds,
            interrupted: false,
            merged_from: Vec::new(),
            shard: None,
            devices: DeviceCounts::default(),
            cohorts: Vec::new(),
            messages: MessageCounts {
                sent: snapshot.messages_sent,
                acked: snapshot.messages_acked,
                failed: 0,
                bytes: snapshot.bytes_sent,
                meters: snapshot.meters_sent,
            },
            phases: stats::phase_stats(&snapshot.latency, &snapshot.uncorrected)?,
            errors: snapshot.errors,
            retries: snapshot.retries,
            thresholds: Vec::new(),
            hub: None,
            certificates: None,
            key_pool: None,
            timeline: None,
        })
    }

    /// The histograms behind the phase table: (corrected, uncorrected).
    pub fn histograms(&self) -> Result<(HistogramMap, HistogramMap), ReportError> {
        stats::histograms(&self.phases)
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The thresholds that failed.
    pub fn failed_thresholds(&self) -> impl Iterator<Item = &ThresholdResult> {
        self.thresholds.iter().filter(|t| !t.pass)
    }

    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The table printed at the end of a run.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let d = &self.devices;
        let _ = writeln!(
            s,
            "fleetsim report: {} ({} target){}, {:.1} s",
            self.scenario,
            self.target,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            },
            self.wall_seconds
        );
        if !self.merged_from.is_empty() {
            let _ = writeln!(s, "merged from {} reports", self.merged_from.len());
        }
        if let Some(shard) = &self.shard {
            let _ = writeln!(s, "shard {shard} of the fleet");
        }
        let _ = writeln!(
            s,
            "devices: {} planned, {} started ({} late), {} enrolled, {} connected, {} renewed ({} renewals), {} failed",
            d.planned, d.started, d.late, d.enrolled, d.connected, d.renewed, d.renewals, d.failed
        );
        if self.cohorts.len() > 1 {
            for c in &self.cohorts {
                let _ = writeln!(
                    s,
                    "  cohort {:<16} {} planned, {} started, {} enrolled, {} connected, {} failed",
                    c.name, c.planned, c.started, c.enrolled, c.connected, c.failed
                );
            }
        }
        let m = &self.messages;
        let _ = write!(
            s,
            "messages: {} sent, {} acked, {} failed; {} bytes ({}), {} meters of 4 KB",
            m.sent,
            m.acked,
            m.failed,
            m.bytes,
            human_bytes(m.bytes),
            m.meters
        );
        if let Some(h) = &self.hub {
            let _ = write!(
                s,
                "; hub received {} ({} bytes, {} meters), {} connects, {} refused, {} throttled",
                h.messages, h.bytes, h.meters, h.connects, h.refused, h.throttled
            );
        }
        let _ = writeln!(s);
        if let Some(k) = &self.key_pool {
            let _ = writeln!(
                s,
                "key pool ({}): {} keys from the pool, {} generated during the run; {} waits for a key, {:.1} s in all (max {:.0} ms)",
                k.kind, k.from_pool, k.generated_during_run, k.waits, k.wait_seconds, k.max_wait_ms
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<18} {:<9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "phase", "outcome", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let mut row = |phase: &str, outcome: &str, l: &LatencyStats| {
            let _ = writeln!(
                s,
                "{:<18} {:<9} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                phase, outcome, l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        };
        let mut uncorrected_shown = false;
        for p in &self.phases {
            row(&p.phase, &p.outcome, &p.latency);
            if let Some(u) = &p.uncorrected {
                row("  (uncorrected)", &p.outcome, u);
                uncorrected_shown = true;
            }
        }
        if uncorrected_shown {
            let _ = writeln!(
                s,
                "latency counts from when an operation was due; (uncorrected) from when it began"
            );
        }
        let _ = writeln!(s);
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            let _ = writeln!(s, "errors ({}):", self.total_errors());
            for (kind, n) in &self.errors {
                let _ = writeln!(s, "  {kind:<40} {n:>8}");
            }
        }
        if !self.retries.is_empty() {
            let total: u64 = self.retries.values().sum();
            let _ = writeln!(s, "client retries ({total}):");
            for (key, n) in &self.retries {
                let _ = writeln!(s, "  {key:<40} {n:>8}");
            }
        }
        if let Some(c) = &self.certificates {
            let _ = writeln!(s);
            s.push_str(&c.to_text());
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "thresholds:");
            for t in &self.thresholds {
                let verdict = if t.pass { "PASS" } else { "FAIL" };
                let _ = writeln!(s, "  {verdict}  {:<40} actual {}", t.threshold, t.actual);
            }
        }
        s
    }
}
