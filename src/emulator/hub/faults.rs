//! The hub's side of a scenario's `faults:`: dropping a share of the live device connections,
//! refusing CONNECTs for a while, holding PUBACKs back for a while. The switches live in the
//! hub's state ([`crate::emulator::faults::HubFaults`]); the MQTT session reads them.

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use super::HubEmulator;
use crate::sync::lock;

impl HubEmulator {
    /// Closes `share` (0..=1) of the device connections live now, picked with `rng`, as a failing
    /// gateway would (no DISCONNECT: the connection ends). Returns how many it closed and how
    /// many were live; at least one is closed when any is live and the share is above zero.
    pub fn drop_connections(&self, share: f64, rng: &mut impl Rng) -> (usize, usize) {
        let live = lock(&self.state.live);
        let mut tokens: Vec<_> = live.values().map(|e| e.dropped.clone()).collect();
        drop(live);
        let total = tokens.len();
        let count = match share > 0.0 && total > 0 {
            true => ((total as f64 * share.min(1.0)).ceil() as usize).clamp(1, total),
            false => 0,
        };
        tokens.shuffle(rng);
        for token in &tokens[..count] {
            token.cancel();
        }
        (count, total)
    }

    /// Closes every live device connection (a restart's first step).
    pub fn drop_all_connections(&self) -> usize {
        let live = lock(&self.state.live);
        live.values().for_each(|e| e.dropped.cancel());
        live.len()
    }

    /// Answers every CONNECT with CONNACK 3 ("server unavailable") for `lasting`.
    pub fn refuse_connects_for(&self, lasting: Duration) {
        self.state.faults.refuse_connects.open_for(lasting);
    }

    /// Holds back every telemetry PUBACK by `delay`, for `lasting`.
    pub fn delay_pubacks_for(&self, delay: Duration, lasting: Duration) {
        self.state.faults.delay_pubacks.open_for(delay, lasting);
    }
}
