//! The scenario's rules that involve more than one field (a single field's rules live with its
//! type): fleet and cohorts, time scale, events, provisioning, SAS cohorts and migrations.

use super::device::Registration;
use super::dps::{self, Provisioning};
use super::events::{self, Action, RevokeMethod};
use super::model::Scenario;
use super::target::Target;
use super::{behaviour, certificate, cohort, faults, sas, telemetry, units};

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
pub(super) fn scenario(s: &Scenario) -> Result<(), (serde_saphyr::Location, String)> {
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
