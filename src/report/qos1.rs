//! The report's QoS 1 accounting: every at-least-once telemetry message sent is either
//! acknowledged or lost, and the lost are listed per cause (see [`crate::metrics::qos1`]);
//! `unaccounted` (sent − acked − Σ lost) is 0 in a sound run. With an embedded hub, what it
//! received is shown beside: an acknowledged message the hub never counted would be a loss the
//! devices cannot see.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::qos1::Qos1Counts;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Qos1Report {
    pub sent: u64,
    pub acked: u64,
    /// cause → messages (`connection_lost`, `publish_timeout`, `too_large`,
    /// `stopped_in_flight`, `panicked_in_flight`, or another failure's kind).
    pub lost: BTreeMap<String, u64>,
    /// sent − acked − Σ lost: messages nothing accounts for (0 in a sound run).
    pub unaccounted: i64,
    /// Telemetry messages the embedded hub(s) received, all QoS (absent for a remote target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_received: Option<u64>,
    /// Acknowledged messages beyond what the hub received (0 unless the hub acknowledged
    /// messages it did not count; absent for a remote target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_not_received: Option<u64>,
}

impl Qos1Report {
    /// From the run's ledger and, for an embedded target, the hub's message count; none when the
    /// run sent no QoS 1 message.
    pub fn new(counts: Qos1Counts, hub_received: Option<u64>) -> Option<Self> {
        if counts.sent == 0 {
            return None;
        }
        Some(Self {
            unaccounted: counts.unaccounted(),
            acked_not_received: hub_received.map(|h| counts.acked.saturating_sub(h)),
            sent: counts.sent,
            acked: counts.acked,
            lost: counts.lost,
            hub_received,
        })
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let causes: Vec<String> = self.lost.iter().map(|(c, n)| format!("{n} {c}")).collect();
        let causes = match causes.is_empty() {
            true => String::new(),
            false => format!(" ({})", causes.join(", ")),
        };
        let _ = write!(
            s,
            "QoS 1: {} sent = {} acked + {} lost{causes}; {} unaccounted",
            self.sent,
            self.acked,
            self.lost_total(),
            self.unaccounted
        );
        if let (Some(h), Some(missing)) = (self.hub_received, self.acked_not_received) {
            let _ = write!(s, "; hub received {h}, acked but not received {missing}");
        }
        let _ = writeln!(s);
        s
    }
}

/// The shards' accounting, added (hub figures only when every shard had them).
pub fn merge<'a>(reports: impl Iterator<Item = &'a Qos1Report>) -> Option<Qos1Report> {
    let mut merged: Option<Qos1Report> = None;
    for r in reports {
        let m = merged.get_or_insert_with(|| Qos1Report {
            hub_received: Some(0),
            acked_not_received: Some(0),
            ..Default::default()
        });
        m.sent += r.sent;
        m.acked += r.acked;
        m.unaccounted += r.unaccounted;
        for (cause, n) in &r.lost {
            *m.lost.entry(cause.clone()).or_insert(0) += n;
        }
        m.hub_received = m.hub_received.zip(r.hub_received).map(|(a, b)| a + b);
        m.acked_not_received = m
            .acked_not_received
            .zip(r.acked_not_received)
            .map(|(a, b)| a + b);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_adds_up_and_shards_merge() {
        let counts = Qos1Counts {
            sent: 10,
            acked: 7,
            lost: BTreeMap::from([("connection_lost".into(), 2), ("publish_timeout".into(), 1)]),
        };
        let r = Qos1Report::new(counts, Some(9)).unwrap();
        assert_eq!(r.unaccounted, 0);
        assert_eq!(
            r.to_text(),
            "QoS 1: 10 sent = 7 acked + 3 lost (2 connection_lost, 1 publish_timeout); 0 unaccounted; hub received 9, acked but not received 0\n"
        );
        let merged = merge([&r, &r].into_iter()).unwrap();
        assert_eq!(
            (merged.sent, merged.acked, merged.lost["connection_lost"]),
            (20, 14, 4)
        );
        assert_eq!(merged.hub_received, Some(18));
        assert!(Qos1Report::new(Qos1Counts::default(), None).is_none());
    }
}
