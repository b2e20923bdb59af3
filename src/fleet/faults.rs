//! The scenario's `faults:` during a run: at each fault's `at`, the embedded emulators are told
//! to break in the way it says ([`crate::emulator::Emulators::drop_connections`] and the
//! others), and the fault is written down, timestamped, for the report. Which connections a
//! drop closes is drawn from the scenario's seed.

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::emulator::Emulators;
use crate::report::faults::FaultEvent;
use crate::scenario::Scenario;
use crate::scenario::faults::{Fault, FaultKind};

pub(super) struct Faults {
    /// By time.
    faults: Vec<Fault>,
    next: usize,
    rng: StdRng,
    /// What happened, for the report.
    pub done: Vec<FaultEvent>,
}

impl Faults {
    pub fn new(scenario: &Scenario) -> Self {
        let mut faults: Vec<Fault> = scenario.faults.iter().map(|f| f.value.clone()).collect();
        faults.sort_by_key(|f| f.at);
        Self {
            faults,
            next: 0,
            rng: StdRng::seed_from_u64(scenario.seed ^ 0x6661_756c_7473),
            done: Vec::new(),
        }
    }

    /// When the next fault is due, if one is left.
    pub fn next_at(&self, start: Instant) -> Option<Instant> {
        self.faults.get(self.next).map(|f| start + f.at.0)
    }

    /// Injects the next fault into `emulators` (the loader made sure faults only come with the
    /// embedded target; without emulators the fault is skipped and says so).
    pub fn fire(&mut self, start: Instant, emulators: Option<&Emulators>) {
        let Some(fault) = self.faults.get(self.next) else {
            return;
        };
        self.next += 1;
        let Some(kind) = fault.kind() else {
            return;
        };
        let detail = match emulators {
            Some(e) => self.inject(kind, e),
            None => "skipped: no embedded emulators".into(),
        };
        tracing::info!(fault = kind.name(), %detail, "fault injected");
        self.done.push(FaultEvent {
            at_seconds: start.elapsed().as_secs_f64(),
            kind: kind.name().into(),
            lasting_seconds: kind.lasting().map(|d| d.as_secs_f64()),
            detail,
        });
    }

    fn inject(&mut self, kind: FaultKind, e: &Emulators) -> String {
        match kind {
            FaultKind::DropConnections(share) => {
                let (dropped, live) = e.drop_connections(share.fraction(), &mut self.rng);
                format!("closed {dropped} of {live} live device connections")
            }
            FaultKind::DelayPubacks { delay, lasting } => {
                e.delay_pubacks_for(delay, lasting);
                format!("PUBACKs held back {delay:?}")
            }
            FaultKind::RefuseConnects(lasting) => {
                e.refuse_connects_for(lasting);
                "CONNECTs answered CONNACK 3 (server unavailable)".into()
            }
            FaultKind::RestartHub(down) => {
                let live = e.restart_hub(down);
                format!("hub device endpoints down, {live} live connections closed, state kept")
            }
            FaultKind::CaUnavailable(lasting) => {
                e.ca_unavailable_for(lasting);
                "the CA answers 503".into()
            }
        }
    }
}
