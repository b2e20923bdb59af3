//! The scenario's timed events during a run. At each event's `at`:
//! - `revoke`: a share of the devices started by then and not yet told to revoke is picked
//!   (deterministically from the scenario's seed) and each is told to revoke its certificate
//!   with the event's method, through its command channel;
//! - `method`, `desired`, `c2d`: the devices are picked the same way from those started by then (or
//!   left to a query), and the operator ([`super::operator`]) takes the event on;
//! - `query`: the operator starts running it.

use std::collections::{HashMap, HashSet};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::operator::{Operator, Targets};
use crate::device::DeviceSpec;
use crate::device::control::{Command, Outbox, channel};
use crate::scenario::events::Selection;
use crate::scenario::{Action, Event, RevokeMethod, Scenario};

pub struct Events {
    /// By time.
    events: Vec<Event>,
    next: usize,
    /// One per device, by device index (only when the scenario revokes).
    outboxes: HashMap<u64, Outbox>,
    /// Device ids by index (only when the operator has events).
    ids: HashMap<u64, String>,
    told: HashSet<u64>,
    /// The cohort of each device of a cohort some `migrate` event names, by index.
    migrating: HashMap<u64, String>,
    /// Devices already told to migrate.
    migrated: HashSet<u64>,
    rng: StdRng,
}

impl Events {
    /// The events of `scenario`, with a command channel given to every device of `specs` when
    /// the scenario revokes.
    pub fn new<'a>(scenario: &Scenario, specs: impl Iterator<Item = &'a mut DeviceSpec>) -> Self {
        let mut events: Vec<Event> = scenario.events.iter().map(|e| e.value.clone()).collect();
        events.sort_by_key(|e| e.at);
        let revokes = scenario.has_revocations();
        let operates = events.iter().any(Event::is_operator);
        let (mut outboxes, mut ids) = (HashMap::new(), HashMap::new());
        let migrate_cohorts: HashSet<String> = events
            .iter()
            .filter_map(|e| match e.action() {
                Some(Action::Migrate(m)) => Some(m.cohort.clone()),
                _ => None,
            })
            .collect();
        let mut migrating = HashMap::new();
        if revokes || operates || !migrate_cohorts.is_empty() {
            for spec in specs {
                let cohort = &spec.telemetry.cohort;
                let migrates = migrate_cohorts.contains(cohort);
                if migrates {
                    migrating.insert(spec.index, cohort.clone());
                }
                if revokes || migrates {
                    let (outbox, inbox) = channel();
                    spec.control = inbox;
                    outboxes.insert(spec.index, outbox);
                }
                if operates {
                    ids.insert(spec.index, spec.id.clone());
                }
            }
        }
        Self {
            told: HashSet::new(),
            migrating,
            migrated: HashSet::new(),
            events,
            next: 0,
            outboxes,
            ids,
            rng: StdRng::seed_from_u64(scenario.seed ^ 0x7265_766f_6b65),
        }
    }

    /// Whether the scenario has events for an operator.
    pub fn need_operator(&self) -> bool {
        self.events.iter().any(Event::is_operator)
    }

    /// What the next event is, for the timeline: its kind and what it does.
    pub fn label(&self) -> (&'static str, String) {
        let Some(event) = self.events.get(self.next) else {
            return ("event", String::new());
        };
        match event.action() {
            Some(Action::Revoke { share, method }) => {
                ("revoke", format!("revoke {}% ({})", share.0, method.name()))
            }
            Some(Action::Method(m)) => ("method", format!("method {}", m.name)),
            Some(Action::Desired(_)) => ("desired", "desired properties".into()),
            Some(Action::Query(_)) => ("query", "registry query".into()),
            Some(Action::C2d(_)) => ("c2d", "cloud-to-device message".into()),
            Some(Action::Migrate(m)) => (
                "migrate",
                format!("migrate {}% of {} to X.509", m.share.0, m.cohort),
            ),
            None => ("event", "event".into()),
        }
    }

    /// When the next event is due, if one is left.
    pub fn next_at(&self, start: Instant) -> Option<Instant> {
        self.events.get(self.next).map(|e| start + e.at.0)
    }

    /// Applies the next event to the devices started so far (indices, in start order); returns
    /// how many devices were picked (0 for a query, or a query choosing them).
    pub fn fire(&mut self, started: &[u64], operator: Option<&mut Operator>) -> usize {
        let Some(event) = self.events.get(self.next).cloned() else {
            return 0;
        };
        self.next += 1;
        let at = event.at.0;
        match (event.action(), operator) {
            (Some(Action::Revoke { share, method }), _) => {
                self.revoke(started, Selection::Share(share), method)
            }
            (Some(Action::Method(m)), Some(op)) => {
                let targets = self.targets(started, m.devices, m.query.as_deref());
                let n = picked(&targets);
                op.method(m, at, targets);
                n
            }
            (Some(Action::Desired(d)), Some(op)) => {
                let targets = self.targets(started, d.devices, d.query.as_deref());
                let n = picked(&targets);
                op.desired(d, at, targets);
                n
            }
            (Some(Action::C2d(c)), Some(op)) => {
                let targets = self.targets(started, c.devices, c.query.as_deref());
                let n = picked(&targets);
                op.c2d(c, at, targets);
                n
            }
            (Some(Action::Migrate(m)), _) => self.migrate(started, m),
            (Some(Action::Query(q)), Some(op)) => {
                op.query(q, at);
                0
            }
            _ => 0,
        }
    }

    /// Tells a share of the started devices not told before to revoke with `method`.
    fn revoke(&mut self, started: &[u64], share: Selection, method: RevokeMethod) -> usize {
        let mut candidates: Vec<u64> = started
            .iter()
            .copied()
            .filter(|i| self.outboxes.contains_key(i) && !self.told.contains(i))
            .collect();
        candidates.shuffle(&mut self.rng);
        // The share is of the devices started by now, rounded up so a small fleet still gets one.
        let count = share.of(started.len()).min(candidates.len());
        for i in &candidates[..count] {
            self.told.insert(*i);
            if let Some(outbox) = self.outboxes.get(i) {
                outbox.send(Command::Revoke(method));
            }
        }
        tracing::info!(devices = count, method = method.name(), "revocation event");
        count
    }

    /// Tells a share of the migrating cohort's started devices (not told before) to migrate,
    /// the n-th of them n / rate after now, so migrations start at the event's rate.
    fn migrate(&mut self, started: &[u64], m: &crate::scenario::sas::MigrateEvent) -> usize {
        let of_cohort: Vec<u64> = started
            .iter()
            .copied()
            .filter(|i| self.migrating.get(i) == Some(&m.cohort))
            .collect();
        let mut candidates: Vec<u64> = of_cohort
            .iter()
            .copied()
            .filter(|i| !self.migrated.contains(i))
            .collect();
        candidates.shuffle(&mut self.rng);
        let count = Selection::Share(m.share)
            .of(of_cohort.len())
            .min(candidates.len());
        for (n, i) in candidates[..count].iter().enumerate() {
            self.migrated.insert(*i);
            let after = std::time::Duration::from_secs_f64(n as f64 / m.rate.0);
            if let Some(outbox) = self.outboxes.get(i) {
                outbox.send(Command::Migrate(after));
            }
        }
        tracing::info!(devices = count, cohort = %m.cohort, "migration event");
        count
    }

    /// The devices an operator event goes to: a selection of the started devices (seeded), or
    /// a query's, limited to the started devices.
    fn targets(
        &mut self,
        started: &[u64],
        devices: Option<Selection>,
        query: Option<&str>,
    ) -> Targets {
        let ids = |indices: &[u64], all: &HashMap<u64, String>| -> Vec<String> {
            indices.iter().filter_map(|i| all.get(i).cloned()).collect()
        };
        match (devices, query) {
            (_, Some(text)) => Targets::Query {
                text: text.to_string(),
                own: ids(started, &self.ids).into_iter().collect(),
            },
            (Some(selection), None) => {
                let mut chosen = started.to_vec();
                chosen.shuffle(&mut self.rng);
                chosen.truncate(selection.of(started.len()));
                Targets::Devices(ids(&chosen, &self.ids))
            }
            (None, None) => Targets::Devices(Vec::new()),
        }
    }
}

fn picked(targets: &Targets) -> usize {
    match targets {
        Targets::Devices(ids) => ids.len(),
        Targets::Query { .. } => 0,
    }
}
