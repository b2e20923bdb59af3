//! A cohort's [`TelemetryPlan`]: its resolved telemetry settings and their compiled program,
//! shared by its devices.

use std::sync::Arc;
use std::time::Duration;

use super::program::Program;
use crate::scenario::telemetry::Telemetry as TelemetrySection;
use crate::scenario::{Payload, Span, TelemetrySettings};

/// What the devices of one cohort send and when, compiled once and shared.
#[derive(Debug, Clone)]
pub struct TelemetryPlan {
    /// The cohort's name (`$device.cohort`).
    pub cohort: String,
    pub settings: TelemetrySettings,
    pub program: Program,
    /// Whether each message carries fleetsim's sequence number and send time as properties, for
    /// a backend that reads them back (`backend.consume`); off otherwise, so the messages are
    /// exactly what the scenario describes.
    pub stamped: bool,
}

impl TelemetryPlan {
    /// The plan of `cohort`'s devices, from its resolved (and validated) settings.
    pub fn new(settings: TelemetrySettings, cohort: &str) -> Self {
        let template = match &settings.payload {
            Payload::Json(t) => Some(t),
            Payload::Raw(_) => None,
        };
        let program = Program::compile(template, &settings.properties);
        Self {
            cohort: cohort.to_string(),
            settings,
            program,
            stamped: false,
        }
    }

    /// The same plan, its messages stamped for a backend (see [`TelemetryPlan::stamped`]).
    pub fn stamped(mut self, stamped: bool) -> Self {
        self.stamped = stamped;
        self
    }

    /// The EZCA sample's message every `interval` (the scenario's defaults, with that interval).
    pub fn every(interval: Duration) -> Arc<Self> {
        let section = TelemetrySection {
            interval: Some(Span(interval)),
            ..TelemetrySection::default()
        };
        Arc::new(Self::new(section.settings(), "default"))
    }
}
