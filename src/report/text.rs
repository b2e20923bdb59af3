//! The table printed at the end of a run (and by `fleetsim report`): counts, the phase table,
//! errors and retries, the certificate and operator sections and the thresholds' verdicts.

use std::fmt::Write as _;

use super::model::Report;
use super::stats::LatencyStats;

impl Report {
    /// The table printed at the end of a run.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_counts(&mut s);
        let _ = writeln!(s);
        self.write_phases(&mut s);
        let _ = writeln!(s);
        self.write_errors(&mut s);
        if let Some(p) = &self.provisioning {
            let _ = writeln!(s);
            s.push_str(&p.to_text());
        }
        if let Some(c) = &self.certificates {
            let _ = writeln!(s);
            s.push_str(&c.to_text());
        }
        if let Some(o) = &self.operator {
            let _ = writeln!(s);
            s.push_str(&o.to_text());
        }
        if let Some(b) = &self.backend {
            let _ = writeln!(s);
            s.push_str(&b.to_text());
        }
        if let Some(line) = self.timeline.as_ref().and_then(|t| t.identities_text()) {
            let _ = writeln!(s);
            s.push_str(&line);
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

    /// The heading, devices (per cohort), messages (and what the hub received), the key pool.
    fn write_counts(&self, s: &mut String) {
        let interrupted = if self.interrupted {
            ", interrupted"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "fleetsim report: {} ({} target){interrupted}, {:.1} s",
            self.scenario, self.target, self.wall_seconds
        );
        if !self.merged_from.is_empty() {
            let _ = writeln!(s, "merged from {} reports", self.merged_from.len());
        }
        if let Some(shard) = &self.shard {
            let _ = writeln!(s, "shard {shard} of the fleet");
        }
        if let Some(b) = &self.start_barrier {
            let _ = match b.late_shards.is_empty() {
                true => writeln!(s, "start barrier {}: on time", b.at),
                false => writeln!(
                    s,
                    "start barrier {}: {} late by up to {:.3} s (their devices count as late)",
                    b.at,
                    b.late_shards.join(", "),
                    b.late_seconds
                ),
            };
        }
        let d = &self.devices;
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
            crate::metrics::human_bytes(m.bytes),
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
        if let Some(q) = &self.qos1 {
            s.push_str(&q.to_text());
        }
        s.push_str(&super::faults::to_text(&self.faults));
        if let Some(k) = &self.key_pool {
            let _ = writeln!(
                s,
                "key pool ({}): {} keys from the pool, {} generated during the run; {} waits for a key, {:.1} s in all (max {:.0} ms)",
                k.kind, k.from_pool, k.generated_during_run, k.waits, k.wait_seconds, k.max_wait_ms
            );
        }
    }

    /// One row per phase and outcome, with the uncorrected latency under it where recorded.
    fn write_phases(&self, s: &mut String) {
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
    }

    fn write_errors(&self, s: &mut String) {
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            let _ = writeln!(s, "errors ({}):", self.total_errors());
            for (kind, n) in &self.errors {
                let _ = writeln!(s, "  {kind:<40} {n:>8}");
            }
        }
        if !self.panics.is_empty() {
            let total: u64 = self.panics.values().sum();
            let _ = writeln!(s, "PANICS ({total}, the run fails):");
            for (at, n) in &self.panics {
                let _ = writeln!(s, "  {at:<40} {n:>8}");
            }
        }
        if !self.retries.is_empty() {
            let total: u64 = self.retries.values().sum();
            let _ = writeln!(s, "client retries ({total}):");
            for (key, n) in &self.retries {
                let _ = writeln!(s, "  {key:<40} {n:>8}");
            }
        }
    }
}
