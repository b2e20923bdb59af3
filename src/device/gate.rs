//! What a device waits on besides the services: the fleet's ceilings per traffic class (GCRA
//! limiters from governor) and, in the closed arrival model, its place among the enrolments in
//! flight. The scheduler (`fleet`) builds the gate; devices only wait on it and give their place
//! back when they have finished enrolling.
//!
//! A limit is a ceiling, not a schedule, so a GCRA limiter fits: work over it waits, and every
//! wait is timed under its own phase (`limit.enrolment`, `limit.connect`, `limit.publish`, and
//! for the operator `limit.method`, `limit.twin_update`, `limit.twin_read`), so a limit never
//! hides inside a service's latency.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::metrics::{Outcome, Phase, Recorder};
use crate::sync::lock;

/// The kinds of traffic the fleet can limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficClass {
    /// Certificate requests: `ca.issue` and `ca.renew`.
    Enrolment,
    /// MQTT connects: `mqtt.connect` and `mqtt.reconnect`.
    Connect,
    /// Telemetry messages.
    Publish,
    /// Direct methods the operator invokes.
    Method,
    /// Twin updates the operator makes (desired properties).
    TwinUpdate,
    /// Twin reads the operator makes (polling for acknowledgements).
    TwinRead,
    /// Cloud-to-device messages the operator sends.
    C2d,
}

impl TrafficClass {
    /// The class whose limit an attempt of `phase` waits for, if any.
    pub fn of(phase: Phase) -> Option<Self> {
        match phase {
            Phase::CaIssue | Phase::CaRenew => Some(Self::Enrolment),
            Phase::MqttConnect | Phase::MqttReconnect | Phase::MigrateReconnect => {
                Some(Self::Connect)
            }
            Phase::MqttPublish => Some(Self::Publish),
            _ => None,
        }
    }

    fn wait_phase(self) -> Phase {
        match self {
            Self::Enrolment => Phase::LimitEnrolment,
            Self::Connect => Phase::LimitConnect,
            Self::Publish => Phase::LimitPublish,
            Self::Method => Phase::LimitMethod,
            Self::TwinUpdate => Phase::LimitTwinUpdate,
            Self::TwinRead => Phase::LimitTwinRead,
            Self::C2d => Phase::LimitC2d,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How much work a limiter lets through at once: 20 ms worth of its rate (at least one), so a
/// waiter woken a timer tick late does not lose the fleet its share of the rate.
const BURST_WINDOW: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Gate {
    limiters: [Option<DefaultDirectRateLimiter>; 7],
    /// Closed model: the place each enrolling device holds, by device index.
    places: Mutex<HashMap<u64, OwnedSemaphorePermit>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limited: Vec<bool> = self.limiters.iter().map(Option::is_some).collect();
        f.debug_struct("Gate").field("limited", &limited).finish()
    }
}

impl Gate {
    /// Limits `class` to `per_second` (must be positive and finite; otherwise unlimited).
    pub fn limit(mut self, class: TrafficClass, per_second: f64) -> Self {
        if !(per_second.is_finite() && per_second > 0.0) {
            return self;
        }
        let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
        let burst = (per_second * BURST_WINDOW.as_secs_f64()).floor() as u32;
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        if let Some(quota) = Quota::with_period(period) {
            self.limiters[class.index()] = Some(RateLimiter::direct(quota.allow_burst(burst)));
        }
        self
    }

    pub fn is_limited(&self, class: TrafficClass) -> bool {
        self.limiters[class.index()].is_some()
    }

    /// Waits until `class` may go ahead; a wait is recorded under the class's `limit.*` phase.
    /// Returns whether it had to wait.
    pub async fn wait(&self, class: TrafficClass, recorder: &Recorder) -> bool {
        let Some(limiter) = &self.limiters[class.index()] else {
            return false;
        };
        if limiter.check().is_ok() {
            return false;
        }
        let start = Instant::now();
        limiter.until_ready().await;
        recorder.record(class.wait_phase(), Outcome::Ok, start, Instant::now());
        true
    }

    /// The scheduler hands device `index` its place among the enrolments in flight.
    pub fn hold_place(&self, index: u64, place: OwnedSemaphorePermit) {
        lock(&self.places).insert(index, place);
    }

    /// Device `index` has finished enrolling (or stopped): its place goes to the next device.
    /// Idempotent, and a no-op for devices that hold no place.
    pub fn enrolment_done(&self, index: u64) {
        let place = lock(&self.places).remove(&index);
        drop(place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_over_the_limit_are_recorded() {
        let recorder = Recorder::new();
        let gate = Gate::default().limit(TrafficClass::Connect, 10.0);
        assert!(gate.is_limited(TrafficClass::Connect));
        assert!(!gate.is_limited(TrafficClass::Publish));
        for _ in 0..5 {
            gate.wait(TrafficClass::Connect, &recorder).await;
            gate.wait(TrafficClass::Publish, &recorder).await;
        }
        // The first connect passes at once, the next four wait for their turn.
        assert_eq!(
            recorder.snapshot().count(Phase::LimitConnect, Outcome::Ok),
            4
        );
        assert_eq!(
            recorder.snapshot().count(Phase::LimitPublish, Outcome::Ok),
            0
        );
    }

    #[tokio::test]
    async fn a_place_is_given_back_once() {
        let places = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let gate = Gate::default();
        let place = places.clone().try_acquire_owned().unwrap();
        gate.hold_place(7, place);
        assert_eq!(places.available_permits(), 0);
        gate.enrolment_done(7);
        gate.enrolment_done(7);
        assert_eq!(places.available_permits(), 1);
    }
}
