//! A scenario's faults as the assembly of emulators offers them: [`Emulators::drop_connections`],
//! refusing CONNECTs, delaying PUBACKs (every hub), the CA's 503s, and restarting the first hub's
//! device endpoints (through the supervisors of [`super::restart`]).

use std::time::Duration;

use rand::Rng;

use super::{Emulators, HubEmulator};

impl Emulators {
    /// Every hub of the run, the first one first.
    fn all_hubs(&self) -> impl Iterator<Item = &HubEmulator> {
        std::iter::once(&self.hub).chain(self.extra_hubs.iter().map(|x| &x.hub))
    }

    /// Closes `share` (0..=1) of the live device connections of every hub; returns how many it
    /// closed and how many were live.
    pub fn drop_connections(&self, share: f64, rng: &mut impl Rng) -> (usize, usize) {
        self.all_hubs()
            .map(|h| h.drop_connections(share, rng))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// Every hub answers CONNECTs with CONNACK 3 for `lasting`.
    pub fn refuse_connects_for(&self, lasting: Duration) {
        self.all_hubs().for_each(|h| h.refuse_connects_for(lasting));
    }

    /// Every hub holds PUBACKs back by `delay` for `lasting`.
    pub fn delay_pubacks_for(&self, delay: Duration, lasting: Duration) {
        self.all_hubs()
            .for_each(|h| h.delay_pubacks_for(delay, lasting));
    }

    /// The CA answers 503 for `lasting`.
    pub fn ca_unavailable_for(&self, lasting: Duration) {
        self.ca.unavailable_for(lasting);
    }

    /// Takes the first hub's device endpoints down for `down` (its live connections end, its
    /// ports close) and brings them back on the same addresses, state kept. Returns how many
    /// connections were live when it went down.
    pub fn restart_hub(&self, down: Duration) -> usize {
        let live = self.hub.drop_all_connections();
        let _ = self.restarts.send(down);
        live
    }
}
