//! The backend's side of a run (`backend.consume`): what fleetsim, reading the hub's Event
//! Hub-compatible endpoint, got of the telemetry the hub acknowledged. The latency is in the
//! phase table (`d2c.delivery`); these are the counts behind it: acknowledged, read, lost
//! (acknowledged, never read) and duplicated (read more than once).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::delivery::DeliveryTotals;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendReport {
    pub consumer_group: String,
    pub partitions: u64,
    /// Times the backend's connection failed and was opened again.
    pub reconnects: u64,
    #[serde(flatten)]
    pub totals: DeliveryTotals,
}

impl BackendReport {
    /// The lines of the text and HTML reports.
    pub fn rows(&self) -> Vec<(String, String)> {
        let t = &self.totals;
        vec![
            (
                "read".into(),
                format!(
                    "consumer group {}, {} partitions, {} reconnects",
                    self.consumer_group, self.partitions, self.reconnects
                ),
            ),
            (
                "messages".into(),
                format!(
                    "{} acknowledged by the hub from {} devices, {} read, {} lost, {} duplicated",
                    t.acked, t.devices, t.received, t.lost, t.duplicated
                ),
            ),
            (
                "other events".into(),
                format!("{} not from fleetsim devices", t.foreign),
            ),
        ]
    }

    pub fn to_text(&self) -> String {
        let mut s = String::from("backend:\n");
        for (label, value) in self.rows() {
            let _ = writeln!(s, "  {label}: {value}");
        }
        s
    }
}

/// The shards' backend reports as one: each shard's backend reads the whole hub, but checks
/// only its own devices' messages (its ledger knows only what they sent), so counts add up.
/// Foreign events are those of the other shards: not added.
pub fn merge<'a>(reports: impl Iterator<Item = &'a BackendReport>) -> Option<BackendReport> {
    let mut merged: Option<BackendReport> = None;
    for r in reports {
        let Some(m) = merged.as_mut() else {
            merged = Some(r.clone());
            continue;
        };
        m.reconnects += r.reconnects;
        m.totals.devices += r.totals.devices;
        m.totals.acked += r.totals.acked;
        m.totals.received += r.totals.received;
        m.totals.lost += r.totals.lost;
        m.totals.duplicated += r.totals.duplicated;
        m.totals.foreign = m.totals.foreign.min(r.totals.foreign);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_and_merge() {
        let a = BackendReport {
            consumer_group: "$Default".into(),
            partitions: 4,
            reconnects: 0,
            totals: DeliveryTotals {
                devices: 2,
                acked: 10,
                received: 10,
                lost: 0,
                duplicated: 1,
                foreign: 3,
            },
        };
        let m = merge([&a, &a].into_iter()).unwrap();
        assert_eq!((m.totals.acked, m.totals.duplicated), (20, 2));
        let text = m.to_text();
        assert!(
            text.contains(
                "20 acknowledged by the hub from 4 devices, 20 read, 0 lost, 2 duplicated"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["lost"], 0);
    }
}
