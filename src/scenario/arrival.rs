//! How devices arrive (`fleet.arrival`, or its short form `fleet.arrival_rate`) and the fleet's
//! global ceilings per traffic class (`fleet.limits`).
//!
//! Two arrival models:
//! - **open**: `rate`, then optional `stages` (`ramp_to` a rate `over` a span, `hold` for a span).
//!   Devices are due at the instants the rate profile gives, whatever happened to the devices
//!   before them; after the last stage the last rate goes on until every device has arrived.
//! - **closed**: `max_in_flight` alone: at most that many devices enrolling at once; the next one
//!   starts when one finishes enrolling. Given together with `rate`, it caps the open model, and a
//!   device that waited for a free place is counted as late.

use std::num::NonZeroU32;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::units::{Rate, Span};

/// `fleet.arrival`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    /// Open model: devices started per unit of time at the start.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// How the rate changes after the start, in order.
    #[serde(default)]
    #[schemars(with = "Vec<Stage>")]
    pub stages: Vec<Spanned<Stage>>,
    /// Enrolments in flight at most: the closed model alone, a cap on the open model with `rate`.
    #[serde(default)]
    pub max_in_flight: Option<NonZeroU32>,
}

/// One stage of an open model: `{ramp_to: 200/s, over: 30s}` or `{hold: 1m}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The rate reached, linearly, at the end of the stage.
    #[serde(default)]
    pub ramp_to: Option<Rate>,
    /// How long the ramp takes.
    #[serde(default)]
    pub over: Option<Span>,
    /// Keep the current rate this long.
    #[serde(default)]
    pub hold: Option<Span>,
}

/// A stage, checked: the rate goes linearly from where it was to `to` in `span`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Ramp { to: f64, over: std::time::Duration },
    Hold(std::time::Duration),
}

/// `fleet.limits`: ceilings for the whole fleet (divided among shards), e.g. to stay under a
/// hub's quota. A limit never schedules anything: work over it waits, and the wait is timed as
/// `limit.enrolment`, `limit.connect`, `limit.publish`, `limit.method`, `limit.twin_update` or
/// `limit.twin_read`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Certificate requests (`ca.issue` and `ca.renew`) per unit of time.
    #[serde(default)]
    pub enrolments: Option<Rate>,
    /// MQTT connects (first connects and reconnects) per unit of time.
    #[serde(default)]
    pub connects: Option<Rate>,
    /// Telemetry messages per unit of time.
    #[serde(default)]
    pub publishes: Option<Rate>,
    /// Direct methods the operator invokes per unit of time (S1: 160 KB/s per unit, 4 KB a
    /// call, so 40/s).
    #[serde(default)]
    pub methods: Option<Rate>,
    /// Twin updates (desired-property patches) per unit of time (S1: 50/s).
    #[serde(default)]
    pub twin_updates: Option<Rate>,
    /// Twin reads (the operator's polls for acknowledgements) per unit of time (S1: 100/s).
    #[serde(default)]
    pub twin_reads: Option<Rate>,
    /// Cloud-to-device messages the operator sends per unit of time (S1: 1.67/s per unit).
    #[serde(default)]
    pub c2d: Option<Rate>,
}

impl Arrival {
    /// The open model's constant-rate form (`arrival_rate: 50/s`).
    pub fn constant(rate: Rate) -> Self {
        Self {
            rate: Some(rate),
            ..Self::default()
        }
    }

    /// The stages, checked (see [`validate`](Self::validate), which the loader runs first).
    pub fn steps(&self) -> Vec<Step> {
        self.stages
            .iter()
            .filter_map(|s| s.value.step().ok())
            .collect()
    }

    /// Rules serde cannot express; `at` locates the `arrival` key.
    pub fn validate(&self, at: Location) -> Result<(), (Location, String)> {
        if self.rate.is_none()
            && let Some(first) = self.stages.first()
        {
            return Err((
                first.referenced,
                "arrival.stages need a starting rate: add arrival.rate".into(),
            ));
        }
        if self.rate.is_none() && self.max_in_flight.is_none() {
            return Err((
                at,
                "arrival needs rate (open model, e.g. rate: 50/s) or max_in_flight (closed model)"
                    .into(),
            ));
        }
        for stage in &self.stages {
            stage
                .value
                .step()
                .map_err(|message| (stage.referenced, message))?;
        }
        Ok(())
    }
}

impl Stage {
    pub fn step(&self) -> Result<Step, String> {
        match (self.ramp_to, self.over, self.hold) {
            (Some(to), Some(over), None) => Ok(Step::Ramp {
                to: to.0,
                over: over.0,
            }),
            (None, None, Some(hold)) => Ok(Step::Hold(hold.0)),
            (Some(_), None, None) => {
                Err("stage: ramp_to needs over (how long the ramp takes, e.g. over: 30s)".into())
            }
            (None, Some(_), None) => Err("stage: over needs ramp_to (the rate to reach)".into()),
            (None, None, None) => {
                Err("empty stage: expected {ramp_to: RATE, over: SPAN} or {hold: SPAN}".into())
            }
            _ => Err(
                "stage: give either {ramp_to: RATE, over: SPAN} or {hold: SPAN}, not both".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(ramp_to: Option<f64>, over: Option<u64>, hold: Option<u64>) -> Stage {
        let secs = |s| Span(std::time::Duration::from_secs(s));
        Stage {
            ramp_to: ramp_to.map(Rate),
            over: over.map(secs),
            hold: hold.map(secs),
        }
    }

    #[test]
    fn stages_are_a_ramp_or_a_hold() {
        assert!(matches!(
            stage(Some(10.0), Some(3), None).step(),
            Ok(Step::Ramp { to: 10.0, .. })
        ));
        assert!(matches!(
            stage(None, None, Some(3)).step(),
            Ok(Step::Hold(_))
        ));
        for bad in [
            stage(Some(10.0), None, None),
            stage(None, Some(3), None),
            stage(None, None, None),
            stage(Some(10.0), Some(3), Some(3)),
        ] {
            assert!(bad.step().is_err(), "{bad:?}");
        }
    }
}
