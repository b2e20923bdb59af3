//! The switches a scenario's `faults:` flip in the emulators (see [`crate::scenario::faults`]):
//! a [`Window`] is a fault on until a deadline (the hub refusing CONNECTs, the CA answering
//! 503), [`Delay`] one that also carries how long (PUBACKs held back). They only hold state;
//! the hub and the CA read them where the fault bites, and [`super::chaos`] flips them.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// A fault that is on until a deadline.
#[derive(Debug, Default)]
pub struct Window {
    until: Mutex<Option<Instant>>,
}

impl Window {
    /// Turns the fault on for `lasting` from now (or longer, if it already was).
    pub fn open_for(&self, lasting: Duration) {
        let end = Instant::now() + lasting;
        let mut until = lock(&self.until);
        *until = Some(until.map_or(end, |u| u.max(end)));
    }

    /// Whether the fault is on now.
    pub fn is_open(&self) -> bool {
        lock(&self.until).is_some_and(|u| Instant::now() < u)
    }
}

/// A fault that holds something back by a delay, until a deadline.
#[derive(Debug, Default)]
pub struct Delay {
    on: Mutex<Option<(Instant, Duration)>>,
}

impl Delay {
    /// Holds things back by `delay` for `lasting` from now.
    pub fn open_for(&self, delay: Duration, lasting: Duration) {
        *lock(&self.on) = Some((Instant::now() + lasting, delay));
    }

    /// The delay to apply now (none when the fault is off).
    pub fn current(&self) -> Option<Duration> {
        lock(&self.on).and_then(|(until, delay)| (Instant::now() < until).then_some(delay))
    }
}

/// The faults of one hub.
#[derive(Debug, Default)]
pub struct HubFaults {
    /// CONNECTs are answered CONNACK 3, "server unavailable".
    pub refuse_connects: Window,
    /// PUBACKs of telemetry are held back.
    pub delay_pubacks: Delay,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_window_closes_at_its_deadline_and_a_longer_one_wins() {
        let w = Window::default();
        assert!(!w.is_open());
        w.open_for(Duration::from_secs(5));
        w.open_for(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(w.is_open(), "the longer window holds");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!w.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_applies_only_while_it_lasts() {
        let d = Delay::default();
        assert_eq!(d.current(), None);
        d.open_for(Duration::from_millis(300), Duration::from_secs(2));
        assert_eq!(d.current(), Some(Duration::from_millis(300)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(d.current(), None);
    }
}
