//! From the scenario's cohorts to one [`DeviceSpec`] per device.
//!
//! Devices are numbered fleet-wide, and the cohorts are interleaved over the numbers in
//! proportion to their sizes (smooth weighted round-robin: with 90% sensors and 10% gateways,
//! every tenth device is a gateway), so a cohort that shares the fleet's arrival process arrives
//! spread over the run instead of all at its end. Ids, seeds and cohorts depend only on the
//! scenario, never on the shard.

use rand::{RngCore, SeedableRng};

use crate::device::DeviceSpec;
use crate::device::messages::TelemetryPlan;
use crate::scenario::{Arrival, IdPattern, Qos, Registration, Scenario, cohort};

/// The name of the implicit cohort of a scenario without `fleet.cohorts`.
pub const DEFAULT_COHORT: &str = "default";

/// What the fleet is made of.
pub struct FleetPlan {
    /// Cohort names, in scenario order.
    pub names: Vec<String>,
    /// Each cohort's own arrival process (`None`: the fleet's).
    pub arrivals: Vec<Option<Arrival>>,
    /// Every device of the whole fleet, by index, with its cohort.
    pub devices: Vec<(usize, DeviceSpec)>,
}

/// Plans the whole fleet (every shard plans the same and keeps its slice).
pub fn plan(scenario: &Scenario) -> FleetPlan {
    let fleet = &scenario.fleet;
    let total = fleet.devices.get();
    let sizes = match fleet.cohorts.is_empty() {
        true => vec![total],
        false => cohort::sizes(total, &fleet.cohorts),
    };
    let members = interleave(&sizes);
    // One spec template per cohort: the top-level settings with the cohort's changes.
    let templates: Vec<(IdPattern, DeviceSpec)> = match fleet.cohorts.is_empty() {
        true => vec![(
            fleet.id_pattern.clone(),
            template(scenario, None, DEFAULT_COHORT),
        )],
        false => fleet
            .cohorts
            .iter()
            .map(|co| {
                let co = &co.value;
                let pattern = co
                    .id_pattern
                    .clone()
                    .unwrap_or_else(|| fleet.id_pattern.clone());
                (pattern, template(scenario, Some(co), &co.name))
            })
            .collect(),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(scenario.seed);
    let devices = members
        .into_iter()
        .enumerate()
        .map(|(index, cohort)| {
            // The same draws in the same order as ever, so ids and seeds of a scenario without
            // cohorts did not change when cohorts came.
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
            let (pattern, template) = &templates[cohort];
            let index = index as u64;
            let spec = DeviceSpec {
                index,
                id: pattern.render(index, &uuid),
                seed: rng.next_u64(),
                ..template.clone()
            };
            (cohort, spec)
        })
        .collect();
    FleetPlan {
        names: match fleet.cohorts.is_empty() {
            true => vec![DEFAULT_COHORT.to_string()],
            false => fleet.cohorts.iter().map(|c| c.value.name.clone()).collect(),
        },
        arrivals: match fleet.cohorts.is_empty() {
            true => vec![None],
            false => fleet
                .cohorts
                .iter()
                .map(|c| c.value.arrival.as_ref().map(|a| a.value.clone()))
                .collect(),
        },
        devices,
    }
}

/// A device of `cohort` (or of the scenario's top level), called `name`, without index, id and
/// seed.
fn template(
    scenario: &Scenario,
    cohort: Option<&crate::scenario::Cohort>,
    name: &str,
) -> DeviceSpec {
    let c = match cohort {
        Some(co) => scenario.certificate.for_cohort(&co.certificate),
        None => scenario.certificate.clone(),
    };
    let telemetry = match cohort {
        Some(co) => scenario.telemetry.for_cohort(&co.telemetry),
        None => scenario.telemetry.settings(),
    };
    let qos = telemetry.qos;
    DeviceSpec {
        index: 0,
        id: String::new(),
        key_kind: c.key,
        validity_days: c.validity_days.get(),
        renew_fraction: c.renew_at.fraction(),
        telemetry: std::sync::Arc::new(
            TelemetryPlan::new(telemetry, name).stamped(scenario.backend.consume),
        ),
        at_least_once: qos == Qos::AtLeastOnce,
        register: scenario.fleet.registration == Registration::PerDevice,
        seed: 0,
        renewal: crate::device::RenewalPolicy {
            path: c.renewal.value,
            jitter: c.renew_jitter.map_or(0.0, |j| j.fraction()),
            deadline: c.renew_deadline.fraction(),
            rekey: c.rekey,
            swap: c.swap,
            sas: cohort.and_then(sas_policy),
        },
        control: Default::default(),
        cloud: crate::device::behaviour::CloudBehaviour::from_scenario(&match cohort {
            Some(co) => scenario.behaviour.for_cohort(&co.behaviour),
            None => scenario.behaviour.clone(),
        })
        .map(std::sync::Arc::new),
        resume: None,
    }
}

/// A SAS cohort's policy (`auth: sas`), with a group key made for this run when its keys are
/// derived; `None` for an X.509 cohort.
fn sas_policy(cohort: &crate::scenario::Cohort) -> Option<crate::device::sas_hub::SasPolicy> {
    use crate::scenario::sas::{Auth, SasKeys};
    if cohort.auth != Auth::Sas {
        return None;
    }
    let settings = cohort.sas.unwrap_or_default();
    Some(crate::device::sas_hub::SasPolicy {
        token_ttl: settings.token_ttl.0,
        renew_fraction: settings.renew_at.fraction(),
        group_key: (settings.keys == SasKeys::Derived).then(rand::random::<[u8; 32]>),
    })
}

/// The cohort of each device index: `sizes[c]` devices of cohort `c`, spread evenly.
pub fn interleave(sizes: &[u32]) -> Vec<usize> {
    let total: i64 = sizes.iter().map(|&s| i64::from(s)).sum();
    let mut credit = vec![0i64; sizes.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, s) in credit.iter_mut().zip(sizes) {
            *c += i64::from(*s);
        }
        // The largest credit goes next; ties to the earlier cohort.
        let Some(next) =
            (0..sizes.len()).max_by(|&a, &b| credit[a].cmp(&credit[b]).then(b.cmp(&a)))
        else {
            break;
        };
        credit[next] -= total;
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohorts_interleave_in_proportion() {
        let members = interleave(&[9, 1]);
        assert_eq!(members.len(), 10);
        assert_eq!(members.iter().filter(|&&c| c == 1).count(), 1);
        let members = interleave(&[18, 2]);
        let gateways: Vec<usize> = (0..20).filter(|&i| members[i] == 1).collect();
        assert_eq!(gateways.len(), 2);
        assert!(gateways[1] - gateways[0] >= 9, "{gateways:?}");
        assert_eq!(interleave(&[3]), vec![0, 0, 0]);
    }
}
