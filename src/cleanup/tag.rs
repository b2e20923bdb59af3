//! Run ids: every identity a remote run creates carries its run's id, as the twin tag
//! `fleetsim.run` and (by default) as a prefix of its device id, so `fleetsim cleanup` can find
//! exactly the run's identities and nothing else.

use crate::scenario::{IdPattern, Provisioning, Scenario, Target};

/// A new run id: `fs` and 8 hex digits (short, so it fits in device ids and DNS names).
pub fn new_run_id() -> String {
    format!("fs{:08x}", rand::random::<u32>())
}

/// Whether `id` may be a run id: 1 to 32 ASCII letters, digits or `-` (it goes into device
/// ids, EZCA domain names and queries).
pub fn valid_run_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Marks `scenario`'s identities with `run_id`: on a remote target whose identities fleetsim
/// creates, the registry tags each and, with `iothub.run_prefix` (the default), the device ids
/// start with `{run_id}-`. Embedded targets and DPS runs are left as they are. Answers whether
/// the scenario was tagged.
pub fn tag_scenario(scenario: &mut Scenario, run_id: &str) -> Result<bool, String> {
    if !valid_run_id(run_id) {
        return Err(format!(
            "run id {run_id:?}: use 1 to 32 letters, digits or '-'"
        ));
    }
    let registry = scenario.fleet.provisioning() == Provisioning::Registry;
    let Target::Remote(remote) = &mut scenario.target.value else {
        return Ok(false);
    };
    if !registry {
        return Ok(false);
    }
    remote.iothub.run_tag = Some(run_id.to_string());
    if remote.iothub.run_prefix {
        let prefixed = |p: &IdPattern| IdPattern::parse(&format!("{run_id}-{}", p.as_str()));
        scenario.fleet.id_pattern = prefixed(&scenario.fleet.id_pattern)?;
        for cohort in &mut scenario.fleet.cohorts {
            if let Some(p) = &cohort.value.id_pattern {
                cohort.value.id_pattern = Some(prefixed(p)?);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ids_get_the_prefix_and_embedded_ones_do_not() {
        let remote = "name: t\nduration: 1m\ntarget:\n  remote:\n    ezca: {url: 'https://e.example/'}\nfleet:\n  devices: 3\n  arrival_rate: 1/s\n";
        let mut s = crate::scenario::parse(remote, std::path::Path::new("t.yaml")).unwrap();
        assert!(tag_scenario(&mut s, "fs0000abcd").unwrap());
        let ids: Vec<String> = crate::fleet::device_specs(&s)
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids[0], "fs0000abcd-sim-000000");
        let Target::Remote(r) = &s.target.value else {
            unreachable!()
        };
        assert_eq!(r.iothub.run_tag.as_deref(), Some("fs0000abcd"));
        let embedded = "name: t\nduration: 1m\ntarget: {embedded: {}}\nfleet:\n  devices: 3\n  arrival_rate: 1/s\n";
        let mut s = crate::scenario::parse(embedded, std::path::Path::new("t.yaml")).unwrap();
        assert!(!tag_scenario(&mut s, "fs1").unwrap());
        assert_eq!(crate::fleet::device_specs(&s)[0].id, "sim-000000");
        assert!(tag_scenario(&mut s, "bad id!").is_err());
        assert!(valid_run_id(&new_run_id()));
    }
}
