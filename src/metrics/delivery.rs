//! The delivery check of a run with a backend (`backend.consume`): per device, which telemetry
//! sequence numbers the hub acknowledged (PUBACK at QoS 1) and which the backend read from the
//! Event Hub-compatible endpoint, each kept as merged ranges (in-order traffic is one range per
//! device, however long the run). At the end: every acknowledged message the backend never
//! read is lost, every read of a message read before is a duplicate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::sync::lock;

/// A set of sequence numbers as disjoint, non-adjacent ranges `start → end` (exclusive).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    /// Adds `x`; false if it was there already.
    pub fn insert(&mut self, x: u64) -> bool {
        let below = self.0.range(..=x).next_back().map(|(&s, &e)| (s, e));
        if below.is_some_and(|(_, e)| x < e) {
            return false;
        }
        let mut start = x;
        let mut end = x.saturating_add(1);
        if let Some((s, e)) = below
            && e == x
        {
            start = s;
        }
        if let Some(next_end) = self.0.remove(&end) {
            end = next_end;
        }
        self.0.insert(start, end);
        true
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many of `[a, b)` are in the set.
    fn overlap(&self, a: u64, b: u64) -> u64 {
        let mut n = 0;
        for (&s, &e) in self.0.range(..b).rev() {
            if e <= a {
                break;
            }
            n += e.min(b) - s.max(a);
        }
        n
    }

    /// How many of `self` are not in `other`.
    pub fn missing_from(&self, other: &Ranges) -> u64 {
        self.0
            .iter()
            .map(|(&s, &e)| (e - s) - other.overlap(s, e))
            .sum()
    }
}

#[derive(Default)]
struct Device {
    acked: Ranges,
    received: Ranges,
    duplicates: u64,
}

/// The ledger both sides write into.
#[derive(Default)]
pub struct DeliveryLedger {
    devices: Mutex<HashMap<String, Device>>,
    /// Events read that carried no fleetsim sequence (other senders on the hub).
    foreign: Mutex<u64>,
}

/// The ledger's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTotals {
    /// Devices that sent or were read.
    pub devices: u64,
    /// Messages the hub acknowledged.
    pub acked: u64,
    /// Distinct messages the backend read.
    pub received: u64,
    /// Acknowledged but never read.
    pub lost: u64,
    /// Reads of a message read before.
    pub duplicated: u64,
    /// Events without a device id and fleetsim sequence (not fleetsim's).
    pub foreign: u64,
}

impl DeliveryLedger {
    /// The hub acknowledged message `seq` of `device`.
    pub fn acked(&self, device: &str, seq: u64) {
        let mut devices = lock(&self.devices);
        match devices.get_mut(device) {
            Some(d) => d.acked.insert(seq),
            None => devices
                .entry(device.to_string())
                .or_default()
                .acked
                .insert(seq),
        };
    }

    /// The backend read message `seq` of `device`; false if it had read it before.
    pub fn received(&self, device: &str, seq: u64) -> bool {
        let mut devices = lock(&self.devices);
        let d = match devices.get_mut(device) {
            Some(d) => d,
            None => devices.entry(device.to_string()).or_default(),
        };
        let new = d.received.insert(seq);
        if !new {
            d.duplicates += 1;
        }
        new
    }

    /// The backend read an event that was not a fleetsim device's telemetry.
    pub fn foreign(&self) {
        *lock(&self.foreign) += 1;
    }

    pub fn totals(&self) -> DeliveryTotals {
        let devices = lock(&self.devices);
        let mut t = DeliveryTotals {
            devices: devices.len() as u64,
            foreign: *lock(&self.foreign),
            ..Default::default()
        };
        for d in devices.values() {
            t.acked += d.acked.len();
            t.received += d.received.len();
            t.lost += d.acked.missing_from(&d.received);
            t.duplicated += d.duplicates;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_subtract() {
        let mut r = Ranges::default();
        for x in [0, 1, 2, 5, 4, 3, 9] {
            assert!(r.insert(x));
        }
        assert!(!r.insert(4));
        assert_eq!(r.0.len(), 2, "{r:?}");
        assert_eq!(r.len(), 7);
        let mut other = Ranges::default();
        for x in [1, 2, 9, 10] {
            other.insert(x);
        }
        assert_eq!(r.missing_from(&other), 4, "0, 3, 4, 5");
        assert_eq!(other.missing_from(&r), 1, "10");
    }

    #[test]
    fn the_ledger_counts_lost_and_duplicated_exactly() {
        let l = DeliveryLedger::default();
        for seq in 0..100 {
            l.acked("a", seq);
        }
        for seq in (0..100).filter(|s| *s != 42) {
            assert!(l.received("a", seq));
        }
        assert!(!l.received("a", 7));
        assert!(l.received("b", 0), "read but never acknowledged: not lost");
        l.foreign();
        let t = l.totals();
        assert_eq!(
            (
                t.devices,
                t.acked,
                t.received,
                t.lost,
                t.duplicated,
                t.foreign
            ),
            (2, 100, 100, 1, 1, 1)
        );
    }
}
