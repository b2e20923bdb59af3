//! The scenario as written: the top-level document ([`Scenario`]), its fleet and report settings.

use std::num::NonZeroU32;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::arrival::{Arrival, Limits};
use super::backend::Backend;
use super::behaviour::Behaviour;
use super::certificate::CertificatePolicy;
use super::cohort::Cohort;
use super::device::{DeviceTransportKind, IdPattern, Registration, TransportImpl};
use super::dps::Provisioning;
use super::events::Event;
use super::faults;
use super::target::Target;
use super::telemetry::Telemetry;
use super::thresholds::Threshold;
use super::units::{Rate, Span};

/// A fleetsim scenario, as written: what a run does (the fleet, its certificates and telemetry,
/// timed events) and against what (the embedded emulators or real EZCA and IoT Hub).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports.
    pub name: String,
    /// Free text shown in reports: what the scenario is for.
    #[serde(default)]
    pub description: String,
    /// Seeds every random choice (device ids from `{uuid}`, telemetry values, jitter), so two runs of
    /// the same scenario do the same things.
    #[serde(default)]
    pub seed: u64,
    /// How long the fleet runs, from the first arrival.
    pub duration: Span,
    /// Real seconds per scenario day, for embedded runs: with `3s`, a 10-day certificate lives 30 s.
    /// The embedded CA issues certificates whose real validity is scaled the same way, so the
    /// devices only ever read lifetimes from their certificates.
    #[serde(default)]
    #[schemars(with = "Option<Span>")]
    pub time_scale: Option<Spanned<Span>>,
    /// Where the devices enrol and connect: `embedded` (the emulators, in-process) or `remote`
    /// (real services).
    #[schemars(with = "Target")]
    pub target: Spanned<Target>,
    /// How many devices, their ids, how they arrive, register and connect.
    pub fleet: Fleet,
    /// The devices' certificates: key kind, validity, renewal and swap.
    #[serde(default)]
    pub certificate: CertificatePolicy,
    /// What each device sends and when (interval or schedule, QoS, payload, properties).
    #[serde(default)]
    pub telemetry: Telemetry,
    /// How devices answer the cloud: subscriptions, reported properties, direct methods,
    /// desired properties (see [`behaviour`]).
    #[serde(default, skip_serializing_if = "Behaviour::is_empty")]
    pub behaviour: Behaviour,
    /// fleetsim as the fleet's backend: reading the hub's Event Hub-compatible endpoint (see
    /// [`backend`]).
    #[serde(default, skip_serializing_if = "Backend::is_default")]
    pub backend: Backend,
    /// What the run writes while it runs, besides the final report.
    #[serde(default)]
    pub report: ReportSettings,
    /// Conditions checked at the end of the run (see [`thresholds`]); if any fails, `fleetsim
    /// run` exits with status 1.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// Timed events: revoking a share of the fleet, direct methods, desired properties, queries
    /// (see [`events`]).
    #[serde(default)]
    #[schemars(with = "Vec<Event>")]
    pub events: Vec<Spanned<Event>>,
    /// Faults injected into the embedded emulators (chaos; see [`faults`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<faults::Fault>")]
    pub faults: Vec<Spanned<faults::Fault>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// How often the interval log (`<report>.hlog`) gets the histograms of the last interval and
    /// the report's timeline a point.
    #[serde(default = "default_report_interval")]
    pub interval: Span,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            interval: default_report_interval(),
        }
    }
}

fn default_report_interval() -> Span {
    Span(std::time::Duration::from_secs(5))
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// How many devices the run starts.
    pub devices: NonZeroU32,
    /// Device ids: `{index}`, `{index:06}` (zero-padded) or `{uuid}` (seeded).
    #[serde(default = "IdPattern::default_pattern")]
    pub id_pattern: IdPattern,
    /// Devices started per unit of time (constant arrivals): the short form of `arrival`.
    #[serde(default)]
    #[schemars(with = "Option<Rate>")]
    pub arrival_rate: Option<Spanned<Rate>>,
    /// How devices are created in the hub's registry: one `PUT` per device as it arrives, or in
    /// bulk calls of up to 100 before the first arrival (the way to stay under a SKU's registry
    /// throttle of 100 operations per minute per unit).
    #[serde(default)]
    pub registration: Registration,
    /// How a device gets its hub identity: from fleetsim through the registry (`registry`, the
    /// default) or from DPS, which also assigns its hub (`dps`, see [`dps`]).
    #[serde(default)]
    #[schemars(with = "Option<Provisioning>")]
    pub provisioning: Option<Spanned<Provisioning>>,
    /// How devices reach the hub: MQTT on TLS (8883) or MQTT over WebSocket (443).
    #[serde(default)]
    pub transport: DeviceTransportKind,
    /// Which MQTT client carries the devices' sessions: `rumqttc` (the default) or `lean`
    /// (fleetsim's own session: less memory and CPU per device).
    #[serde(default)]
    pub transport_impl: TransportImpl,
    /// How devices arrive: open model with stages, or closed (see [`arrival`]).
    #[serde(default)]
    #[schemars(with = "Option<Arrival>")]
    pub arrival: Option<Spanned<Arrival>>,
    /// Ceilings per traffic class for the whole fleet.
    #[serde(default)]
    pub limits: Limits,
    /// Device groups with their own settings (see [`cohort`]); none means one group.
    #[serde(default)]
    #[schemars(with = "Vec<Cohort>")]
    pub cohorts: Vec<Spanned<Cohort>>,
}

impl Fleet {
    /// How the fleet's devices get their hub identity (`registry` unless the scenario says).
    pub fn provisioning(&self) -> Provisioning {
        self.provisioning
            .as_ref()
            .map_or(Provisioning::Registry, |p| p.value)
    }

    /// The fleet's arrival process, from `arrival` or its short form `arrival_rate`; none when
    /// every cohort has its own.
    pub fn arrival(&self) -> Option<Arrival> {
        match (&self.arrival, &self.arrival_rate) {
            (Some(a), _) => Some(a.value.clone()),
            (None, Some(r)) => Some(Arrival::constant(r.value)),
            (None, None) => None,
        }
    }
}
