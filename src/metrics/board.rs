//! The fleet board: every device's current state, certificate expiry and last error, one slot per
//! device, for the live web map (`crate::web`) and the report's final map ([`FleetMap`]).
//!
//! The recorder's gauges count devices per state; the map needs to know *which* device is in
//! which state. A slot is one byte of state and four bytes of expiry, written with relaxed
//! atomics by the device's own task (a store, no lock), so the board costs the devices nothing
//! measurable and a reader copies 10,000 devices' states in microseconds. Errors are rare and
//! go to a small map under a lock. Slots are laid out cohort by cohort (the map groups by
//! cohort); a device finds its slot from its index through a map built once.
//!
//! [`DeviceBoard::freeze`] keeps the board as it was when the scenario's duration ended, before
//! the devices drain and all turn `done`: the live page's last picture and the report's map are
//! both that moment.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::vocabulary::DeviceState;
use crate::sync::lock;

/// Timeline events kept; a run has a handful, this only bounds a pathological scenario.
const MAX_EVENTS: usize = 1_000;
/// Last errors the report's map keeps (devices beyond this show none in a replay).
const MAX_ERRORS_KEPT: usize = 2_000;

/// One event of the run, where it happened on the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoardEvent {
    /// Seconds since the run began.
    pub t: f64,
    /// `revoke`, `method`, `desired`, `query`, `c2d`, ...
    pub kind: String,
    /// What it did, as a person reads it (`revoke 2% (admin): 40 devices`).
    pub detail: String,
}

/// One cohort's place on the map: its devices are the next `devices` slots.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MapCohort {
    pub name: String,
    pub devices: u32,
}

/// The map at one moment, as the report keeps it and the web page draws it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FleetMap {
    /// Seconds since the run began.
    pub t: f64,
    pub cohorts: Vec<MapCohort>,
    /// Device ids in slot order, one per line.
    pub ids: String,
    /// Base64 of one byte per slot: the index of its state in `DeviceState::ALL`.
    pub states: String,
    /// Base64 of one little-endian u32 per slot: its certificate's notAfter (Unix seconds),
    /// 0 when it holds none.
    pub expiry: String,
    /// Slot → `phase/kind` of its last failure (devices that failed at least once).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<u32, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<BoardEvent>,
}

impl FleetMap {
    /// The states, decoded; an error for a report whose map was tampered with.
    pub fn state_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(&self.states)
    }

    /// Devices per state name, from the encoded states.
    pub fn counts(&self) -> Result<BTreeMap<&'static str, u64>, base64::DecodeError> {
        Ok(count_states(&self.state_bytes()?))
    }
}

/// Devices per state name in `states` (one byte each); bytes that name no state are skipped.
pub fn count_states(states: &[u8]) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for b in states {
        if let Some(s) = DeviceState::ALL.get(usize::from(*b)) {
            *counts.entry(s.name()).or_insert(0) += 1;
        }
    }
    counts
}

pub struct DeviceBoard {
    /// The run's start, from which events and the map's `t` count.
    start: Mutex<Instant>,
    cohorts: Vec<MapCohort>,
    ids: Vec<String>,
    slot_of: HashMap<u64, u32>,
    states: Box<[AtomicU8]>,
    expiry: Box<[AtomicU32]>,
    errors: Mutex<HashMap<u32, String>>,
    events: Mutex<Vec<BoardEvent>>,
    frozen: OnceLock<FleetMap>,
}

impl DeviceBoard {
    /// A board for `devices` (index, id, cohort number), with `cohorts` names; every device
    /// starts `pending`. Slots follow cohort order, then the order given.
    pub fn new(cohorts: &[String], devices: &[(u64, String, usize)]) -> Self {
        let mut order: Vec<&(u64, String, usize)> = devices.iter().collect();
        order.sort_by_key(|(_, _, cohort)| *cohort);
        let mut counts = vec![0u32; cohorts.len()];
        for (_, _, c) in &order {
            if let Some(n) = counts.get_mut(*c) {
                *n += 1;
            }
        }
        let slot_of = order
            .iter()
            .enumerate()
            .map(|(slot, (index, _, _))| (*index, slot as u32))
            .collect();
        Self {
            start: Mutex::new(Instant::now()),
            cohorts: cohorts
                .iter()
                .zip(counts)
                .map(|(name, devices)| MapCohort {
                    name: name.clone(),
                    devices,
                })
                .collect(),
            ids: order.iter().map(|(_, id, _)| id.clone()).collect(),
            slot_of,
            states: order.iter().map(|_| AtomicU8::new(0)).collect(),
            expiry: order.iter().map(|_| AtomicU32::new(0)).collect(),
            errors: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            frozen: OnceLock::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn cohorts(&self) -> &[MapCohort] {
        &self.cohorts
    }

    /// Counts time from `start` (the run's start) from now on.
    pub fn set_start(&self, start: Instant) {
        *lock(&self.start) = start;
    }

    /// Seconds since the run began.
    pub fn elapsed(&self) -> f64 {
        lock(&self.start).elapsed().as_secs_f64()
    }

    /// Device `index` is now in `state` (devices not on the board are ignored).
    pub fn set_state(&self, index: u64, state: DeviceState) {
        if let Some(&slot) = self.slot_of.get(&index) {
            self.states[slot as usize].store(state as u8, Ordering::Relaxed);
        }
    }

    /// Device `index` now holds a certificate expiring at `not_after`.
    pub fn set_expiry(&self, index: u64, not_after: SystemTime) {
        if let Some(&slot) = self.slot_of.get(&index) {
            let secs = not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let secs = u32::try_from(secs).unwrap_or(u32::MAX);
            self.expiry[slot as usize].store(secs, Ordering::Relaxed);
        }
    }

    /// Device `index` failed `what` (`phase/kind`).
    pub fn set_error(&self, index: u64, what: String) {
        if let Some(&slot) = self.slot_of.get(&index) {
            lock(&self.errors).insert(slot, what);
        }
    }

    /// Notes an event of the run on the timeline, now.
    pub fn event(&self, kind: &str, detail: String) {
        let mut events = lock(&self.events);
        if events.len() < MAX_EVENTS {
            events.push(BoardEvent {
                t: self.elapsed(),
                kind: kind.into(),
                detail,
            });
        }
    }

    /// Every slot's state, one byte each (the frozen ones once frozen).
    pub fn state_bytes(&self) -> Vec<u8> {
        if let Some(map) = self.frozen.get() {
            return map.state_bytes().unwrap_or_default();
        }
        self.states
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }

    /// Every slot's certificate notAfter (Unix seconds, 0: none).
    pub fn expiry_secs(&self) -> Vec<u32> {
        self.expiry
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }

    pub fn events(&self) -> Vec<BoardEvent> {
        lock(&self.events).clone()
    }

    /// What the hover shows for `slot`: id, state, notAfter and last error.
    pub fn device(&self, slot: usize) -> Option<(String, &'static str, u32, Option<String>)> {
        let id = self.ids.get(slot)?.clone();
        let state = self.state_bytes().get(slot).copied().unwrap_or(0);
        let state = DeviceState::ALL
            .get(usize::from(state))
            .map_or("?", |s| s.name());
        let expiry = self.expiry[slot].load(Ordering::Relaxed);
        let error = lock(&self.errors).get(&(slot as u32)).cloned();
        Some((id, state, expiry, error))
    }

    /// Keeps the board as it is now (later changes are not shown); the first call wins.
    pub fn freeze(&self) -> FleetMap {
        self.frozen.get_or_init(|| self.map_now()).clone()
    }

    /// Whether [`freeze`](Self::freeze) was called.
    pub fn is_frozen(&self) -> bool {
        self.frozen.get().is_some()
    }

    fn map_now(&self) -> FleetMap {
        let expiry: Vec<u8> = self
            .expiry_secs()
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let errors = lock(&self.errors)
            .iter()
            .map(|(slot, what)| (*slot, what.clone()))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .take(MAX_ERRORS_KEPT)
            .collect();
        FleetMap {
            t: self.elapsed(),
            cohorts: self.cohorts.clone(),
            ids: self.ids.join("\n"),
            states: STANDARD.encode(self.state_bytes()),
            expiry: STANDARD.encode(expiry),
            errors,
            events: self.events(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> DeviceBoard {
        let cohorts = vec!["a".to_string(), "b".to_string()];
        let devices = vec![
            (7, "b-0".to_string(), 1),
            (3, "a-0".to_string(), 0),
            (9, "a-1".to_string(), 0),
        ];
        DeviceBoard::new(&cohorts, &devices)
    }

    #[test]
    fn slots_follow_cohorts_and_states_land_on_the_right_device() {
        let b = board();
        assert_eq!(b.cohorts()[0].devices, 2);
        assert_eq!(b.cohorts()[1].devices, 1);
        b.set_state(7, DeviceState::Revoked);
        b.set_state(9, DeviceState::Online);
        b.set_state(1234, DeviceState::Failed); // not on the board: ignored
        assert_eq!(b.state_bytes(), vec![0, 3, 6]);
        assert_eq!(b.device(2).unwrap().0, "b-0");
        assert_eq!(b.device(2).unwrap().1, "revoked");
        assert!(b.device(3).is_none());
    }

    #[test]
    fn freezing_keeps_the_picture_and_the_map_round_trips() {
        let b = board();
        b.set_state(3, DeviceState::Online);
        b.set_error(9, "ca.issue/http_429".into());
        b.set_expiry(3, UNIX_EPOCH + std::time::Duration::from_secs(1_000));
        b.event("revoke", "revoke 2%".into());
        let map = b.freeze();
        b.set_state(3, DeviceState::Done);
        assert_eq!(b.state_bytes(), vec![3, 0, 0]);
        assert_eq!(map.counts().unwrap()["online"], 1);
        assert_eq!(map.errors[&1], "ca.issue/http_429");
        let json = serde_json::to_string(&map).unwrap();
        let back: FleetMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
        let expiry = STANDARD.decode(&back.expiry).unwrap();
        assert_eq!(&expiry[..4], &1000u32.to_le_bytes());
        assert_eq!(back.events[0].kind, "revoke");
    }
}
