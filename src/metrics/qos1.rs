//! The QoS 1 ledger of a run: every at-least-once telemetry message a device sends is opened
//! here ([`Qos1Ledger::send`]) and closed exactly once, as acknowledged or as lost with a cause
//! ([`InFlight::acked`], [`InFlight::lost`]). A message whose device task ends while it waits
//! for its PUBACK is closed by the [`InFlight`] guard's drop: lost to `panicked_in_flight` when
//! the task is unwinding from a panic, to `stopped_in_flight` when it was stopped (aborted at
//! the end of the run). So `sent = acked + Σ lost` holds unless a message escaped the ledger,
//! which the report shows as unaccounted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::lock;

/// Why a QoS 1 message was lost, as the report lists it.
pub mod cause {
    /// The connection ended (dropped, reset, closed by the hub) with the message in flight.
    pub const CONNECTION_LOST: &str = "connection_lost";
    /// No PUBACK within the ack timeout (the hub may still have received it).
    pub const PUBLISH_TIMEOUT: &str = "publish_timeout";
    /// Over IoT Hub's 256 KB: never handed to the hub.
    pub const TOO_LARGE: &str = "too_large";
    /// The device was stopped (at the end of the run) while it waited for the PUBACK.
    pub const STOPPED_IN_FLIGHT: &str = "stopped_in_flight";
    /// The device task panicked while it waited for the PUBACK.
    pub const PANICKED_IN_FLIGHT: &str = "panicked_in_flight";
}

/// QoS 1 messages sent, acknowledged and lost per cause.
#[derive(Debug, Default)]
pub struct Qos1Ledger {
    sent: AtomicU64,
    acked: AtomicU64,
    /// Rare next to sends (a loss is a failure), so one lock is enough.
    lost: Mutex<BTreeMap<String, u64>>,
}

/// A copy of the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qos1Counts {
    pub sent: u64,
    pub acked: u64,
    pub lost: BTreeMap<String, u64>,
}

impl Qos1Counts {
    /// Messages neither acknowledged nor lost: `sent − acked − Σ lost` (negative if a message
    /// was closed twice).
    pub fn unaccounted(&self) -> i64 {
        let lost: u64 = self.lost.values().sum();
        self.sent as i64 - self.acked as i64 - lost as i64
    }
}

impl Qos1Ledger {
    /// Opens a message: it is sent, its outcome to come.
    pub fn send(&self) -> InFlight<'_> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        InFlight {
            ledger: self,
            open: true,
        }
    }

    fn close_lost(&self, cause: &str) {
        *lock(&self.lost).entry(cause.to_string()).or_insert(0) += 1;
    }

    pub fn counts(&self) -> Qos1Counts {
        Qos1Counts {
            sent: self.sent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            lost: lock(&self.lost).clone(),
        }
    }
}

/// A QoS 1 message on its way: closed once, by [`InFlight::acked`], [`InFlight::lost`] or its drop.
#[must_use = "a message in flight is closed as acked or lost"]
pub struct InFlight<'a> {
    ledger: &'a Qos1Ledger,
    open: bool,
}

impl InFlight<'_> {
    pub fn acked(mut self) {
        self.open = false;
        self.ledger.acked.fetch_add(1, Ordering::Relaxed);
    }

    /// Lost, for `cause` (one of [`cause`], or a failure's kind).
    pub fn lost(mut self, cause: &str) {
        self.open = false;
        self.ledger.close_lost(cause);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.open {
            let cause = match std::thread::panicking() {
                true => cause::PANICKED_IN_FLIGHT,
                false => cause::STOPPED_IN_FLIGHT,
            };
            self.ledger.close_lost(cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_closed_once_and_drops_name_why() {
        let ledger = Qos1Ledger::default();
        ledger.send().acked();
        ledger.send().acked();
        ledger.send().lost(cause::PUBLISH_TIMEOUT);
        drop(ledger.send());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _in_flight = ledger.send();
            panic!("a device task panics mid-publish");
        }));
        assert!(unwound.is_err());
        let counts = ledger.counts();
        assert_eq!((counts.sent, counts.acked), (5, 2));
        let lost: Vec<_> = counts.lost.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            lost,
            [
                (cause::PANICKED_IN_FLIGHT, 1),
                (cause::PUBLISH_TIMEOUT, 1),
                (cause::STOPPED_IN_FLIGHT, 1)
            ]
        );
        assert_eq!(counts.unaccounted(), 0);
        let _forgotten = std::mem::ManuallyDrop::new(ledger.send());
        assert_eq!(
            ledger.counts().unaccounted(),
            1,
            "a message that escaped shows"
        );
    }
}
