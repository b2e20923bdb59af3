//! The scenario: what a run does, loaded from YAML.
//!
//! Everything the YAML may say is modelled here with `deny_unknown_fields`, so a typo is an error
//! that names the file, line, column and the keys that were expected. Units (durations, rates,
//! percentages) parse in their own types (see [`units`]). YAML parsing happens only in [`load`] and
//! [`parse`], so the YAML crate (serde-saphyr) can be swapped without touching the rest. The
//! top-level document is in `model` ([`Scenario`], [`Fleet`]); rules that involve more than one
//! field run in `validate` after parsing, with the position of the key they concern.

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
mod model;
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
mod validate;

use std::path::{Path, PathBuf};

pub use arrival::{Arrival, Limits};
pub use backend::Backend;
pub use behaviour::Behaviour;
pub use certificate::{CertificatePolicy, KeySourceKind, Renewal};
pub use cohort::Cohort;
pub use delay::Delay;
pub use device::{DeviceTransportKind, IdPattern, Qos, Registration, TransportImpl};
pub use dps::{DpsAllocation, DpsLimitsChoice, EmbeddedDps, Provisioning, RemoteDps};
pub use events::{Action, Event, RevokeMethod, Swap};
pub use model::{Fleet, ReportSettings, Scenario};
pub use target::*;
pub use telemetry::{Payload, Telemetry, TelemetrySettings};
pub use thresholds::Threshold;
pub use units::{Percent, Rate, Span};

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
    validate::scenario(&scenario).map_err(|(at, message)| {
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
