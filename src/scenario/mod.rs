//! The scenario: what a run does, loaded from YAML.
//!
//! Everything the YAML may say is modelled here with `deny_unknown_fields`, so a typo is an error
//! that names the file, line, column and the keys that were expected. Units (durations, rates,
//! percentages) parse in their own types (see [`units`]). YAML parsing happens only in [`load`] and
//! [`parse`], so the YAML crate (serde-saphyr) can be swapped without touching the rest.

pub mod arrival;
pub mod backend;
pub mod behaviour;
mod certificate;
pub mod cohort;
pub mod delay;
mod device;
pub mod dps;
pub mod draw;
pub mod events;
pub mod faults;
mod generators;
pub mod placeholders;
pub mod sas;
pub mod schedule;
pub mod schema;
mod size;
pub mod smoke;
mod target;
pub mod telemetry;
pub mod template;
pub mod templates;
pub mod thresholds;
pub mod units;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

pub use arrival::{Arrival, Limits};
pub use backend::Backend;
pub use behaviour::Behaviour;
pub use certificate::{CertificatePolicy, KeySourceKind, Renewal};
pub use cohort::Cohort;
pub use delay::Delay;
pub use device::{DeviceTransportKind, IdPattern, Qos, Registration, TransportImpl};
pub use dps::{DpsAllocation, DpsLimitsChoice, EmbeddedDps, Provisioning, RemoteDps};
pub use events::{Action, Event, RevokeMethod, Swap};
pub use target::*;
pub use telemetry::{Payload, Telemetry, TelemetrySettings};
pub use thresholds::Threshold;
pub use units::{Percent, Rate, Span};

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

/// Why a scenario could not be loaded. Every variant names the file; parse and validation errors
/// also name the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates scenario text; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        ScenarioError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: tidy_message(&e.to_string(), path),
        }
    })?;
    validate(&scenario).map_err(|(at, message)| {
        // Errors about something missing have no location of their own: point at its parent key.
        let parent = match message.starts_with("behaviour") {
            true => "behaviour",
            false => "fleet",
        };
        let (line, column) = match at == serde_saphyr::Location::UNKNOWN {
            true => key_position(text, parent),
            false => (at.line(), at.column()),
        };
        ScenarioError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })?;
    Ok(scenario)
}

/// serde-saphyr's message repeats the location we already print and calls the file `<input>`:
/// drop the first and name the file in its snippet.
fn tidy_message(message: &str, path: &Path) -> String {
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let message = match message.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(message, |(_, m)| m),
        None => message,
    };
    message.replace("<input>", &path.display().to_string())
}

/// Line and column (1-based) of a top-level `key:`, or 1:1.
fn key_position(text: &str, key: &str) -> (u64, u64) {
    let prefix = format!("{key}:");
    text.lines()
        .position(|l| l.starts_with(&prefix))
        .map_or((1, 1), |i| (i as u64 + 1, 1))
}

/// The provisioning rules (`scenario::dps`) over the target's DPS block, the fleet and the events.
fn validate_provisioning(s: &Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    let block = match &s.target.value {
        Target::Embedded(e) => e
            .dps
            .as_ref()
            .map_or(dps::DpsBlock::None, dps::DpsBlock::Embedded),
        Target::Remote(r) => r
            .dps
            .as_ref()
            .map_or(dps::DpsBlock::None, dps::DpsBlock::Remote),
    };
    let (f, provisioning) = (&s.fleet, s.fleet.provisioning.as_ref());
    let first_operator_event = s.events.iter().find(|e| e.value.is_operator());
    dps::validate_operator(&block, first_operator_event.map(|e| e.referenced))?;
    dps::validate(provisioning, f.registration, f.transport, block)
}

/// Rules that involve more than one field.
fn validate(s: &Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    validate_fleet(s)?;
    validate_time_scale(s)?;
    if let (Some(scale), Target::Remote(_)) = (&s.time_scale, &s.target.value) {
        return Err((
            scale.referenced,
            "time_scale compresses certificate lifetimes and only works with the embedded target; \
             real services issue certificates in real time"
                .into(),
        ));
    }
    let c = &s.certificate;
    certificate::validate(c, "", c.renewal.referenced)?;
    telemetry::validate(&s.telemetry, None, "", serde_saphyr::Location::UNKNOWN)?;
    validate_events(s)?;
    let embedded = matches!(s.target.value, Target::Embedded(_));
    for f in &s.faults {
        faults::validate(&f.value, f.referenced, s.duration.0, embedded)?;
    }
    validate_provisioning(s)?;
    if let Target::Remote(r) = &s.target.value
        && r.iothub.token_env.is_some()
        && r.iothub.host.is_none()
    {
        return Err((
            s.target.referenced,
            "iothub.token_env needs iothub.host (the hub's host name, e.g. myhub.azure-devices.net)".into(),
        ));
    }
    if let Target::Embedded(e) = &s.target.value
        && !matches!(e.hub.disabled_connack, 3 | 5)
    {
        return Err((
            s.target.referenced,
            format!(
                "hub.disabled_connack is {}: expected 3 or 5",
                e.hub.disabled_connack
            ),
        ));
    }
    if let Target::Embedded(e) = &s.target.value
        && let Some(sku) = e.hub.sku
        && e.hub.units.get() > sku.limits().max_units
    {
        return Err((
            s.target.referenced,
            format!(
                "hub.units is {}: an IoT Hub of tier {sku} has at most {} units",
                e.hub.units,
                sku.limits().max_units
            ),
        ));
    }
    if let Target::Embedded(e) = &s.target.value
        && let Some(sku) = e.hub.sku
        && !sku.limits().has_cloud_to_device()
        && (s.behaviours().iter().any(|b| !b.is_empty())
            || s.events
                .iter()
                .any(|e| !matches!(e.value.action(), Some(Action::Revoke { .. }))))
    {
        return Err((
            s.target.referenced,
            format!(
                "hub.sku {sku} is a basic tier: it has no twins, direct methods or cloud-to-device messages, so behaviour and method, desired and query events need a standard tier (S1, S2, S3) or F1"
            ),
        ));
    }
    if let Target::Embedded(e) = &s.target.value
        && s.certificate.validity_days.get() > e.ca.max_cert_life_days
    {
        return Err((
            s.target.referenced,
            format!(
                "certificate.validity_days ({}) exceeds the embedded CA's max_cert_life_days ({})",
                s.certificate.validity_days, e.ca.max_cert_life_days
            ),
        ));
    }
    Ok(())
}

/// A compressed day times the longest validity a device asks for is the real lifetime the
/// embedded CA gives a certificate: it must stay within [`units::MAX_SPAN`] (past it, certificate
/// dates overflow).
fn validate_time_scale(s: &Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    let Some(scale) = &s.time_scale else {
        return Ok(());
    };
    let days = s
        .certificate_policies()
        .iter()
        .map(|p| p.validity_days.get())
        .max()
        .unwrap_or(1);
    let real = scale.value.as_secs_f64() * f64::from(days);
    if real > units::MAX_SPAN.as_secs_f64() {
        return Err((
            scale.referenced,
            format!(
                "time_scale {}s makes a certificate of {days} days last {real:e}s of real time: \
                 at most {} days (100 years)",
                scale.value.as_secs_f64(),
                units::MAX_SPAN.as_secs() / 86_400
            ),
        ));
    }
    Ok(())
}

/// Rules for events: each is one thing, well formed ([`events::validate`]), falls inside the
/// duration, and self-revocation has an RSA key to sign with.
fn validate_events(s: &Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    let rsa = s.certificate_policies().iter().all(|c| c.signs_jwt());
    for e in &s.events {
        events::validate(&e.value, e.referenced)?;
        if let Some(Action::Revoke {
            method: RevokeMethod::SelfRevoke,
            ..
        }) = e.value.action()
            && !rsa
        {
            return Err((
                e.referenced,
                "method: self revokes with an RS256 certificate-JWT signed by the device key, so certificate.key (of every cohort) must be rsa-2048, rsa-3072 or rsa-4096".into(),
            ));
        }
        if let Some(Action::Migrate(m)) = e.value.action() {
            validate_migrate(s, m).map_err(|why| (e.referenced, why))?;
        }
        if e.value.at.0 >= s.duration.0 {
            return Err((
                e.referenced,
                format!(
                    "event at {:?} is not before the end of the run ({:?})",
                    e.value.at.0, s.duration.0
                ),
            ));
        }
    }
    Ok(())
}

/// The fleet's arrival, limits and cohorts.
fn validate_fleet(s: &Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    let f = &s.fleet;
    match (&f.arrival, &f.arrival_rate) {
        (Some(a), Some(_)) => {
            return Err((
                a.referenced,
                "give fleet.arrival or fleet.arrival_rate (its short form), not both".into(),
            ));
        }
        (Some(a), None) => a.value.validate(a.referenced)?,
        (None, Some(_)) => {}
        (None, None)
            if !f.cohorts.is_empty() && f.cohorts.iter().all(|c| c.value.arrival.is_some()) => {}
        (None, None) => {
            return Err((
                serde_saphyr::Location::UNKNOWN,
                "fleet needs arrival_rate (e.g. arrival_rate: 50/s) or arrival \
                 (e.g. arrival: {rate: 10/s, stages: [{ramp_to: 50/s, over: 30s}]} or \
                 arrival: {max_in_flight: 20})"
                    .into(),
            ));
        }
    }
    cohort::validate(f.devices.get(), &f.cohorts)?;
    validate_sas_cohorts(s)?;
    behaviour::validate(&s.behaviour, "", serde_saphyr::Location::UNKNOWN)?;
    for c in &f.cohorts {
        let prefix = format!("cohort {:?}: ", c.value.name);
        let b = s.behaviour.for_cohort(&c.value.behaviour);
        behaviour::validate(&b, &prefix, c.referenced)?;
        let policy = s.certificate.for_cohort(&c.value.certificate);
        certificate::validate(&policy, &prefix, c.referenced)?;
        telemetry::validate(
            &s.telemetry,
            Some(&c.value.telemetry),
            &prefix,
            c.referenced,
        )?;
    }
    if let Target::Embedded(e) = &s.target.value
        && let Some(c) = f.cohorts.iter().find(|c| {
            c.value
                .certificate
                .validity_days
                .is_some_and(|d| d.get() > e.ca.max_cert_life_days)
        })
    {
        return Err((
            c.referenced,
            format!(
                "cohort {:?}: certificate.validity_days exceeds the embedded CA's max_cert_life_days ({})",
                c.value.name, e.ca.max_cert_life_days
            ),
        ));
    }
    Ok(())
}

/// A migration names a cohort of the scenario whose devices use SAS.
fn validate_migrate(s: &Scenario, m: &sas::MigrateEvent) -> Result<(), String> {
    let cohort = s.fleet.cohorts.iter().find(|c| c.value.name == m.cohort);
    match cohort {
        None => Err(format!(
            "migrate.cohort {:?} is not a cohort of fleet.cohorts",
            m.cohort
        )),
        Some(c) if c.value.auth != sas::Auth::Sas => Err(format!(
            "migrate.cohort {:?} does not use auth: sas: only SAS devices migrate",
            m.cohort
        )),
        Some(_) => Ok(()),
    }
}

/// SAS cohorts create their own identities through the registry: not in bulk (bulk identities
/// are CA-signed) and not through DPS.
fn validate_sas_cohorts(s: &Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    for c in s
        .fleet
        .cohorts
        .iter()
        .filter(|c| c.value.auth == sas::Auth::Sas)
    {
        let name = &c.value.name;
        if s.fleet.registration != Registration::PerDevice {
            return Err((
                c.referenced,
                format!(
                    "cohort {name:?} uses auth: sas, whose devices create their own SAS identities: fleet.registration must be per-device"
                ),
            ));
        }
        if s.fleet.provisioning() != Provisioning::Registry {
            return Err((
                c.referenced,
                format!(
                    "cohort {name:?} uses auth: sas, which this version runs against the hub's registry only, not DPS"
                ),
            ));
        }
        if !s.behaviour.for_cohort(&c.value.behaviour).is_empty() {
            return Err((
                c.referenced,
                format!(
                    "cohort {name:?} uses auth: sas, whose devices send telemetry only in this version: give it no behaviour (methods, desired, c2d)"
                ),
            ));
        }
    }
    Ok(())
}

impl Scenario {
    /// Whether any event revokes certificates.
    pub fn has_revocations(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e.value.action(), Some(Action::Revoke { .. })))
    }

    /// Whether any event has fleetsim act as the operator (a direct method, a desired patch, a
    /// query), which needs the hub's service API.
    pub fn has_operator_events(&self) -> bool {
        self.events.iter().any(|e| e.value.is_operator())
    }

    /// The behaviour of each cohort, in order (one, the top level's, without cohorts).
    pub fn behaviours(&self) -> Vec<Behaviour> {
        if self.fleet.cohorts.is_empty() {
            return vec![self.behaviour.clone()];
        }
        self.fleet
            .cohorts
            .iter()
            .map(|c| self.behaviour.for_cohort(&c.value.behaviour))
            .collect()
    }

    /// The certificate policy of each cohort, in order (one, the top level's, without cohorts).
    pub fn certificate_policies(&self) -> Vec<CertificatePolicy> {
        if self.fleet.cohorts.is_empty() {
            return vec![self.certificate.clone()];
        }
        self.fleet
            .cohorts
            .iter()
            .map(|c| self.certificate.for_cohort(&c.value.certificate))
            .collect()
    }

    /// What each cohort's devices send and when, in order (one, the top level's, without
    /// cohorts).
    pub fn telemetry_settings(&self) -> Vec<TelemetrySettings> {
        if self.fleet.cohorts.is_empty() {
            return vec![self.telemetry.settings()];
        }
        self.fleet
            .cohorts
            .iter()
            .map(|c| self.telemetry.for_cohort(&c.value.telemetry))
            .collect()
    }

    /// Real time per scenario day (one real day when not compressed).
    pub fn day(&self) -> std::time::Duration {
        self.time_scale
            .as_ref()
            .map(|s| s.value.0)
            .unwrap_or(std::time::Duration::from_secs(86_400))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_units_are_bounded_by_the_tier() {
        let scenario = |sku: &str, units: u32| {
            format!(
                "name: u\nduration: 30s\ntarget:\n  embedded:\n    hub: {{sku: {sku}, units: {units}}}\n\
                 fleet: {{devices: 1, arrival_rate: 1/s}}\n"
            )
        };
        let path = Path::new("units.yaml");
        assert!(parse(&scenario("S1", 200), path).is_ok());
        assert!(parse(&scenario("B3", 10), path).is_ok());
        let err = parse(&scenario("S3", 11), path).unwrap_err().to_string();
        assert!(
            err.contains("units.yaml:4:3") && err.contains("at most 10 units"),
            "{err}"
        );
        let err = parse(&scenario("F1", 2), path).unwrap_err().to_string();
        assert!(err.contains("at most 1 units"), "{err}");
    }
}
