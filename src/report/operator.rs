//! The operator's side of a run (fleetsim as IoT Hub's operator, the scenario's `method`,
//! `desired` and `query` events): per event, what happened to the devices it went to. The
//! latencies are in the phase table (`method.invoke`, `twin.desired`, `registry.query`); these
//! are the counts behind them: methods by final outcome and by the status the devices answered,
//! desired patches acknowledged or not, queries run and what they last returned.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OperatorReport {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<MethodCounts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub desired: Vec<DesiredCounts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<QueryCounts>,
}

/// One `method` event: each device's final outcome (after retries of throttled calls).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MethodCounts {
    pub name: String,
    /// When the event fired, seconds into the run.
    pub at_seconds: f64,
    /// Devices the method went to.
    pub devices: u64,
    pub ok: u64,
    /// Not connected (404103), after the hub waited the connect timeout.
    pub offline: u64,
    /// Connected but no answer within the response timeout (504101), or no answer from the hub.
    pub timeout: u64,
    /// Still throttled after the retries.
    pub throttled: u64,
    pub error: u64,
    /// Calls the hub's throttle refused (429), retried or not.
    pub throttled_calls: u64,
    /// The statuses the devices answered with, and how often.
    #[serde(default)]
    pub statuses: BTreeMap<String, u64>,
    /// From the event firing to its last call's end: `devices / seconds` is the rate of methods
    /// the hub and the fleet sustained.
    #[serde(default)]
    pub seconds: f64,
}

impl MethodCounts {
    /// Calls ended per second over the event's span (0 before any ended).
    pub fn per_second(&self) -> f64 {
        let ended = self.ok + self.offline + self.timeout + self.throttled + self.error;
        if self.seconds > 0.0 {
            ended as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One `desired` event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DesiredCounts {
    /// The properties patched.
    pub properties: Vec<String>,
    pub at_seconds: f64,
    pub devices: u64,
    /// Devices whose acknowledgement the operator saw in time.
    pub acknowledged: u64,
    /// Patched, but not acknowledged within the event's `ack_timeout`.
    pub not_acknowledged: u64,
    /// The patch itself failed (after retries of throttled calls).
    pub failed: u64,
    /// Patches the hub's throttle refused (429), retried or not.
    pub throttled_calls: u64,
    /// Twin reads made to see the acknowledgements, and how many of those were throttled.
    pub reads: u64,
    pub reads_throttled: u64,
}

/// One `query` event, over all its runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueryCounts {
    pub text: String,
    pub at_seconds: f64,
    /// How often it repeats, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_seconds: Option<f64>,
    pub runs: u64,
    pub ok: u64,
    pub failed: u64,
    pub throttled: u64,
    /// What the last successful run returned: the count of a `SELECT COUNT()`, else the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

impl QueryCounts {
    /// Notes what a successful run returned.
    pub fn returned(&mut self, value: u64) {
        self.last = Some(value);
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
    }
}

impl OperatorReport {
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.desired.is_empty() && self.queries.is_empty()
    }

    /// One line per event, for the text and HTML reports.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        for m in &self.methods {
            let statuses: Vec<String> = m
                .statuses
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            rows.push((
                format!("method {} at {:.0}s", m.name, m.at_seconds),
                format!(
                    "{} devices: {} ok, {} offline, {} timeout, {} throttled, {} error in {:.1}s ({:.0}/s); {} calls throttled (429); device status {}",
                    m.devices, m.ok, m.offline, m.timeout, m.throttled, m.error, m.seconds, m.per_second(), m.throttled_calls,
                    if statuses.is_empty() { "-".to_string() } else { statuses.join(", ") }
                ),
            ));
        }
        for d in &self.desired {
            rows.push((
                format!("desired {} at {:.0}s", d.properties.join(", "), d.at_seconds),
                format!(
                    "{} devices: {} acknowledged, {} not acknowledged, {} failed; {} patches throttled (429); {} twin reads ({} throttled)",
                    d.devices, d.acknowledged, d.not_acknowledged, d.failed, d.throttled_calls, d.reads, d.reads_throttled
                ),
            ));
        }
        for q in &self.queries {
            let every = q
                .every_seconds
                .map_or(String::new(), |e| format!(" every {e:.0}s"));
            let last = match (q.last, q.min, q.max) {
                (Some(l), Some(lo), Some(hi)) => format!("; last {l} (min {lo}, max {hi})"),
                _ => String::new(),
            };
            rows.push((
                format!("query at {:.0}s{every}", q.at_seconds),
                format!(
                    "{:?}: {} runs, {} ok, {} failed ({} throttled){last}",
                    q.text, q.runs, q.ok, q.failed, q.throttled
                ),
            ));
        }
        rows
    }

    pub fn to_text(&self) -> String {
        let mut s = String::from("operator:\n");
        for (label, value) in self.rows() {
            let _ = writeln!(s, "  {label}: {value}");
        }
        s
    }
}

/// The shards' operator reports as one: the same scenario fires the same events in the same
/// order on every shard, each over its own devices, so counts add event by event. A query reads
/// the whole hub from every shard: its values are the largest any shard saw.
pub fn merge<'a>(reports: impl Iterator<Item = &'a OperatorReport>) -> Option<OperatorReport> {
    let mut merged: Option<OperatorReport> = None;
    for r in reports {
        let Some(m) = merged.as_mut() else {
            merged = Some(r.clone());
            continue;
        };
        for (into, from) in m.methods.iter_mut().zip(&r.methods) {
            into.devices += from.devices;
            into.ok += from.ok;
            into.offline += from.offline;
            into.timeout += from.timeout;
            into.throttled += from.throttled;
            into.error += from.error;
            into.throttled_calls += from.throttled_calls;
            // Shards fire together: the merged span is the longest.
            into.seconds = into.seconds.max(from.seconds);
            for (status, n) in &from.statuses {
                *into.statuses.entry(status.clone()).or_insert(0) += n;
            }
        }
        for (into, from) in m.desired.iter_mut().zip(&r.desired) {
            into.devices += from.devices;
            into.acknowledged += from.acknowledged;
            into.not_acknowledged += from.not_acknowledged;
            into.failed += from.failed;
            into.throttled_calls += from.throttled_calls;
            into.reads += from.reads;
            into.reads_throttled += from.reads_throttled;
        }
        for (into, from) in m.queries.iter_mut().zip(&r.queries) {
            into.runs += from.runs;
            into.ok += from.ok;
            into.failed += from.failed;
            into.throttled += from.throttled;
            into.last = into.last.max(from.last);
            into.max = into.max.max(from.max);
            into.min = match (into.min, from.min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_event_reports_its_rate_over_its_span() {
        let m = MethodCounts {
            devices: 1000,
            ok: 990,
            offline: 10,
            seconds: 2.0,
            ..Default::default()
        };
        assert_eq!(m.per_second(), 500.0);
        assert_eq!(MethodCounts::default().per_second(), 0.0);
        let r = OperatorReport {
            methods: vec![m],
            ..Default::default()
        };
        assert!(r.to_text().contains("in 2.0s (500/s)"), "{}", r.to_text());
    }

    #[test]
    fn shards_add_up_event_by_event() {
        let mut a = OperatorReport::default();
        a.methods.push(MethodCounts {
            name: "reboot".into(),
            devices: 3,
            ok: 2,
            offline: 1,
            statuses: [("200".to_string(), 2)].into(),
            seconds: 1.5,
            ..Default::default()
        });
        let mut q = QueryCounts {
            text: "SELECT COUNT() AS n FROM devices".into(),
            runs: 1,
            ok: 1,
            ..Default::default()
        };
        q.returned(5);
        a.queries.push(q);
        let mut b = a.clone();
        b.queries[0].returned(7);
        b.methods[0].seconds = 2.5;
        let m = merge([&a, &b].into_iter()).unwrap();
        assert_eq!(m.methods[0].devices, 6);
        assert_eq!(m.methods[0].statuses["200"], 4);
        assert_eq!(
            m.methods[0].seconds, 2.5,
            "shards fire together: the longest span"
        );
        assert_eq!(m.queries[0].runs, 2);
        assert_eq!(
            (m.queries[0].min, m.queries[0].max, m.queries[0].last),
            (Some(5), Some(7), Some(7))
        );
        let text = m.to_text();
        assert!(
            text.contains("method reboot at 0s: 6 devices: 4 ok, 2 offline"),
            "{text}"
        );
        assert!(text.contains("last 7 (min 5, max 7)"), "{text}");
        assert!(merge(std::iter::empty()).is_none());
    }
}
