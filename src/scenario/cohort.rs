//! `fleet.cohorts`: several device groups in one scenario, each with its own key kind,
//! certificate lifetime and renewal, telemetry and arrival. What a cohort leaves out comes from
//! the scenario's top-level `certificate` and `telemetry` (and the fleet's arrival). A scenario without cohorts is
//! one implicit cohort, `default`, with all the devices.
//!
//! Sizes are either all `share` (percentages summing to 100%, of `fleet.devices`) or all
//! `devices` (counts summing to `fleet.devices`). Shares are rounded by largest remainder, so the
//! counts always add up to the fleet.

use std::num::NonZeroU32;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::arrival::Arrival;
use super::behaviour::Behaviour;
pub use super::certificate::CohortCertificate;
use super::device::IdPattern;
pub use super::telemetry::CohortTelemetry;
use super::units::Percent;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    /// Shown in the report's per-cohort counts.
    pub name: String,
    /// This share of `fleet.devices`.
    #[serde(default)]
    pub share: Option<Percent>,
    /// Or exactly this many devices.
    #[serde(default)]
    pub devices: Option<NonZeroU32>,
    /// Device ids of this cohort (default: `fleet.id_pattern`). Indices are fleet-wide, so
    /// cohorts sharing a pattern still get distinct ids.
    #[serde(default)]
    pub id_pattern: Option<IdPattern>,
    /// This cohort's certificate settings: each one given replaces the top level's.
    #[serde(default)]
    pub certificate: CohortCertificate,
    /// This cohort's telemetry: each part given replaces the top level's.
    #[serde(default)]
    pub telemetry: CohortTelemetry,
    /// How this cohort's devices answer the cloud: each field given replaces the top level's.
    #[serde(default, skip_serializing_if = "Behaviour::is_empty")]
    pub behaviour: Behaviour,
    /// This cohort's own arrival process; without it, the cohort's devices arrive through the
    /// fleet's, interleaved with the other cohorts that have none.
    #[serde(default)]
    #[schemars(with = "Option<Arrival>")]
    pub arrival: Option<Spanned<Arrival>>,
    /// How this cohort's devices authenticate: `x509` (default, a certificate from the CA) or
    /// `sas` (a symmetric key and SAS tokens, see `sas`).
    #[serde(default)]
    pub auth: super::sas::Auth,
    /// With `auth: sas`: the tokens' lifetime and renewal, and where the keys come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas: Option<super::sas::SasSettings>,
}

/// How many devices each cohort gets, in order. The loader has checked the cohorts with
/// [`validate`], so shares sum to 100% and counts to `total`.
pub fn sizes(total: u32, cohorts: &[Spanned<Cohort>]) -> Vec<u32> {
    if cohorts.iter().all(|c| c.value.devices.is_some()) {
        return cohorts
            .iter()
            .map(|c| c.value.devices.map_or(0, NonZeroU32::get))
            .collect();
    }
    // Largest remainder: floor every share, then hand the devices left to the largest
    // fractions (earlier cohorts first on ties), so the sizes add up to `total` exactly.
    let exact: Vec<f64> = cohorts
        .iter()
        .map(|c| c.value.share.map_or(0.0, |s| s.fraction()) * f64::from(total))
        .collect();
    let mut sizes: Vec<u32> = exact.iter().map(|x| x.floor() as u32).collect();
    let mut left = total.saturating_sub(sizes.iter().sum());
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for i in order.into_iter().cycle().take(exact.len() * 2) {
        if left == 0 {
            break;
        }
        sizes[i] += 1;
        left -= 1;
    }
    sizes
}

/// Rules across cohorts; `devices` is `fleet.devices`.
pub fn validate(devices: u32, cohorts: &[Spanned<Cohort>]) -> Result<(), (Location, String)> {
    let Some(first) = cohorts.first() else {
        return Ok(());
    };
    let mut names: Vec<&str> = Vec::new();
    for c in cohorts {
        let at = c.referenced;
        let v = &c.value;
        if names.contains(&v.name.as_str()) {
            return Err((at, format!("cohort name {:?} is used twice", v.name)));
        }
        names.push(&v.name);
        match (v.share, v.devices) {
            (Some(_), Some(_)) => {
                return Err((
                    at,
                    format!("cohort {:?}: give share or devices, not both", v.name),
                ));
            }
            (None, None) => {
                return Err((
                    at,
                    format!(
                        "cohort {:?}: expected share (e.g. share: 90%) or devices (e.g. devices: 900)",
                        v.name
                    ),
                ));
            }
            _ => {}
        }
        if v.share.is_some() != first.value.share.is_some() {
            return Err((
                at,
                "cohorts must all give share or all give devices, not a mix".into(),
            ));
        }
        if let Some(a) = &v.arrival {
            a.value.validate(a.referenced)?;
        }
        if v.sas.is_some() && v.auth != super::sas::Auth::Sas {
            return Err((
                at,
                format!("cohort {:?}: sas settings need auth: sas", v.name),
            ));
        }
    }
    if first.value.share.is_some() {
        let sum: f64 = cohorts
            .iter()
            .filter_map(|c| c.value.share)
            .map(|s| s.0)
            .sum();
        if (sum - 100.0).abs() > 1e-6 {
            return Err((
                first.referenced,
                format!("cohort shares sum to {sum}%: expected 100%"),
            ));
        }
    } else {
        let sum: u64 = cohorts
            .iter()
            .filter_map(|c| c.value.devices)
            .map(|d| u64::from(d.get()))
            .sum();
        if sum != u64::from(devices) {
            return Err((
                first.referenced,
                format!("cohort devices sum to {sum}, but fleet.devices is {devices}"),
            ));
        }
    }
    if let Some((c, size)) = cohorts
        .iter()
        .zip(sizes(devices, cohorts))
        .find(|(_, n)| *n == 0)
    {
        return Err((
            c.referenced,
            format!(
                "cohort {:?} gets {size} of the {devices} devices: raise its share or the fleet",
                c.value.name
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(share: Option<f64>, devices: Option<u32>) -> Spanned<Cohort> {
        let unknown = Location::UNKNOWN;
        Spanned::new(
            Cohort {
                name: format!("c{share:?}{devices:?}"),
                share: share.map(Percent),
                devices: devices.and_then(NonZeroU32::new),
                id_pattern: None,
                certificate: CohortCertificate::default(),
                telemetry: CohortTelemetry::default(),
                behaviour: Behaviour::default(),
                arrival: None,
                auth: Default::default(),
                sas: None,
            },
            unknown,
            unknown,
        )
    }

    #[test]
    fn shares_round_to_the_fleet_exactly() {
        let c = [cohort(Some(90.0), None), cohort(Some(10.0), None)];
        assert_eq!(sizes(20, &c), vec![18, 2]);
        let thirds = [
            cohort(Some(100.0 / 3.0), None),
            cohort(Some(100.0 / 3.0), None),
            cohort(Some(100.0 / 3.0), None),
        ];
        assert_eq!(sizes(10, &thirds), vec![4, 3, 3]);
        assert_eq!(sizes(10, &thirds).iter().sum::<u32>(), 10);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let short = [cohort(Some(90.0), None), cohort(Some(5.0), None)];
        assert!(validate(20, &short).unwrap_err().1.contains("sum to 95%"));
        let mixed = [cohort(Some(90.0), None), cohort(None, Some(2))];
        assert!(validate(20, &mixed).unwrap_err().1.contains("not a mix"));
        let counts = [cohort(None, Some(18)), cohort(None, Some(3))];
        assert!(validate(20, &counts).unwrap_err().1.contains("sum to 21"));
        let tiny = [cohort(Some(99.0), None), cohort(Some(1.0), None)];
        assert!(validate(20, &tiny).unwrap_err().1.contains("gets 0"));
        assert!(validate(20, &[cohort(None, Some(18)), cohort(None, Some(2))]).is_ok());
    }
}
