//! The scenario's timed events during a run. At each event's `at`, a share of the devices started
//! by then and not yet told to revoke is picked (deterministically from the scenario's seed) and
//! each is told to revoke its certificate with the event's method.

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
    /// One per device, by index (empty when the scenario has no events).
    outboxes: Vec<Outbox>,
    told: Vec<bool>,
    rng: StdRng,
}

impl Events {
    /// The events of `scenario`, with a command channel given to every device of `specs`.
    pub fn new(scenario: &Scenario, specs: &mut [DeviceSpec]) -> Self {
        let mut events: Vec<Event> = scenario.events.iter().map(|e| e.value.clone()).collect();
        events.sort_by_key(|e| e.at);
        let outboxes = match events.is_empty() {
            true => Vec::new(),
            false => specs
                .iter_mut()
                .map(|spec| {
                    let (outbox, inbox) = channel();
                    spec.control = inbox;
                    outbox
                })
                .collect(),
        };
        Self {
            told: vec![false; outboxes.len()],
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

    /// Applies the next event to the first `started` devices; returns how many were told.
    pub fn fire(&mut self, started: usize) -> usize {
        let Some(event) = self.events.get(self.next) else {
            return 0;
        };
        self.next += 1;
        let started = started.min(self.outboxes.len());
        let mut candidates: Vec<usize> = (0..started).filter(|i| !self.told[*i]).collect();
        candidates.shuffle(&mut self.rng);
        // The share is of the devices started by now, rounded up so a small fleet still gets one.
        let count =
            ((event.revoke.fraction() * started as f64).ceil() as usize).min(candidates.len());
        for &i in &candidates[..count] {
            self.told[i] = true;
            self.outboxes[i].send(Command::Revoke(event.method));
        }
        tracing::info!(
            devices = count,
            method = event.method.name(),
            "revocation event"
        );
        count
    }
}
