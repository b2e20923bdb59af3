//! The scenario's timed events during a run. At each event's `at`, a share of the devices started
//! by then and not yet told to revoke is picked (deterministically from the scenario's seed) and
//! each is told to revoke its certificate with the event's method.

use std::collections::{HashMap, HashSet};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use crate::device::DeviceSpec;
use crate::device::control::{Command, Outbox, channel};
use crate::scenario::{Event, Scenario};

pub struct Events {
    /// By time.
    events: Vec<Event>,
    next: usize,
    /// One per device, by device index (empty when the scenario has no events).
    outboxes: HashMap<u64, Outbox>,
    told: HashSet<u64>,
    rng: StdRng,
}

impl Events {
    /// The events of `scenario`, with a command channel given to every device of `specs`.
    pub fn new<'a>(scenario: &Scenario, specs: impl Iterator<Item = &'a mut DeviceSpec>) -> Self {
        let mut events: Vec<Event> = scenario.events.iter().map(|e| e.value.clone()).collect();
        events.sort_by_key(|e| e.at);
        let outboxes = match events.is_empty() {
            true => HashMap::new(),
            false => specs
                .map(|spec| {
                    let (outbox, inbox) = channel();
                    spec.control = inbox;
                    (spec.index, outbox)
                })
                .collect(),
        };
        Self {
            told: HashSet::new(),
            events,
            next: 0,
            outboxes,
            rng: StdRng::seed_from_u64(scenario.seed ^ 0x7265_766f_6b65),
        }
    }

    /// When the next event is due, if one is left.
    pub fn next_at(&self, start: Instant) -> Option<Instant> {
        self.events.get(self.next).map(|e| start + e.at.0)
    }

    /// Applies the next event to the devices started so far (indices, in start order); returns
    /// how many were told.
    pub fn fire(&mut self, started: &[u64]) -> usize {
        let Some(event) = self.events.get(self.next) else {
            return 0;
        };
        self.next += 1;
        let mut candidates: Vec<u64> = started
            .iter()
            .copied()
            .filter(|i| self.outboxes.contains_key(i) && !self.told.contains(i))
            .collect();
        candidates.shuffle(&mut self.rng);
        // The share is of the devices started by now, rounded up so a small fleet still gets one.
        let count = ((event.revoke.fraction() * started.len() as f64).ceil() as usize)
            .min(candidates.len());
        for i in &candidates[..count] {
            self.told.insert(*i);
            if let Some(outbox) = self.outboxes.get(i) {
                outbox.send(Command::Revoke(event.method));
            }
        }
        tracing::info!(
            devices = count,
            method = event.method.name(),
            "revocation event"
        );
        count
    }
}
