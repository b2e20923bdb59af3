//! The run's results: a text table for the terminal and a JSON file for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::emulator::hub::HubStats;
use crate::metrics::{PhaseStats, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode report: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    /// `embedded` or `remote`.
    pub target: String,
    pub started_at: String,
    pub wall_seconds: f64,
    /// True when the run was stopped early (Ctrl-C).
    pub interrupted: bool,
    pub devices: DeviceCounts,
    pub messages: MessageCounts,
    pub phases: Vec<PhaseStats>,
    /// `phase/kind` → count.
    pub errors: BTreeMap<String, u64>,
    /// What the embedded hub counted, to compare with `messages`.
    pub hub: Option<HubStats>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeviceCounts {
    pub planned: u64,
    pub started: u64,
    pub enrolled: u64,
    pub connected: u64,
    /// Devices that renewed at least once.
    pub renewed: u64,
    pub renewals: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MessageCounts {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
}

impl Report {
    pub fn new(
        scenario: &str,
        target: &str,
        started_at: String,
        wall_seconds: f64,
        snapshot: Snapshot,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            target: target.into(),
            started_at,
            wall_seconds,
            interrupted: false,
            devices: DeviceCounts::default(),
            messages: MessageCounts {
                sent: snapshot.messages_sent,
                acked: snapshot.messages_acked,
                failed: 0,
            },
            phases: snapshot.phases,
            errors: snapshot.errors,
            hub: None,
        }
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
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
        let _ = writeln!(
            s,
            "devices: {} planned, {} started, {} enrolled, {} connected, {} renewed ({} renewals), {} failed",
            d.planned, d.started, d.enrolled, d.connected, d.renewed, d.renewals, d.failed
        );
        let m = &self.messages;
        let _ = write!(
            s,
            "messages: {} sent, {} acked, {} failed",
            m.sent, m.acked, m.failed
        );
        if let Some(h) = &self.hub {
            let _ = write!(
                s,
                "; hub received {} ({} bytes), {} connects, {} refused, {} throttled",
                h.messages, h.bytes, h.connects, h.refused, h.throttled
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<18} {:<9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "phase", "outcome", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for p in &self.phases {
            let _ = writeln!(
                s,
                "{:<18} {:<9} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                p.phase, p.outcome, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
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
        s
    }
}
