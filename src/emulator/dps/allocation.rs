//! Which linked hub a device goes to, and the substatus DPS reports for it (reference §6):
//! `static` takes the enrolment's one hub; `hashed` (evenly weighted) spreads registration ids
//! evenly over the enrolment's hubs by a hash of the id, so a device that registers again lands
//! on the same hub. A device registering again keeps its hub when the enrolment's reprovision
//! policy says not to update assignments.

use std::sync::Arc;

use super::enrollment::AllocationPolicy;
use super::error::{self, DpsError};
use super::matching::Matched;
use super::records::Substatus;
use super::state::LinkedHub;

/// Where a device goes.
pub(super) struct Decision {
    pub hub: Arc<dyn LinkedHub>,
    pub substatus: Substatus,
}

/// Chooses the hub for `registration_id` admitted by `matched`, among the `linked` hubs;
/// `previous` is the hub of an earlier assignment.
pub(super) fn choose(
    matched: &Matched,
    linked: &[Arc<dyn LinkedHub>],
    registration_id: &str,
    previous: Option<&str>,
) -> Result<Decision, DpsError> {
    let mut candidates: Vec<&Arc<dyn LinkedHub>> = linked
        .iter()
        .filter(|h| {
            matched.hubs.is_empty()
                || matched
                    .hubs
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(h.host_name()))
        })
        .collect();
    // A stable order, whatever order the hubs were linked in.
    candidates.sort_by(|a, b| a.host_name().cmp(b.host_name()));
    let no_hub = || {
        DpsError::new(
            400,
            error::NO_HUB,
            "No IoT hub is linked to the enrollment for this device.",
        )
    };
    let kept = previous.filter(|_| !matched.reprovision.update_hub_assignment);
    // Not updating assignments keeps the device where it is, while that hub is still linked.
    let hub = match kept.and_then(|p| linked.iter().find(|h| h.host_name() == p)) {
        Some(h) => h.clone(),
        None => match matched.policy {
            AllocationPolicy::Static if candidates.len() == 1 => candidates[0].clone(),
            AllocationPolicy::Static => return Err(no_hub()),
            AllocationPolicy::Hashed => {
                let n = candidates.len();
                if n == 0 {
                    return Err(no_hub());
                }
                candidates[bucket_of(registration_id, n)].clone()
            }
            AllocationPolicy::GeoLatency | AllocationPolicy::Custom => return Err(no_hub()),
        },
    };
    let substatus = match previous {
        None => Substatus::InitialAssignment,
        Some(p) if p == hub.host_name() => Substatus::ReprovisionedToInitialAssignment,
        Some(_) if matched.reprovision.migrate_device_data => Substatus::DeviceDataMigrated,
        Some(_) => Substatus::DeviceDataReset,
    };
    Ok(Decision { hub, substatus })
}

/// An even, stable spread of ids over `n` buckets (SHA-256, not the std hasher, whose output may
/// change between Rust releases).
fn bucket_of(id: &str, n: usize) -> usize {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(first) % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::dps::enrollment::{ProvisioningStatus, ReprovisionPolicy};
    use crate::emulator::dps::matching::Source;

    struct Hub(&'static str);
    impl LinkedHub for Hub {
        fn host_name(&self) -> &str {
            self.0
        }
        fn provision_device(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
    }

    fn matched(policy: AllocationPolicy, hubs: &[&str], update: bool) -> Matched {
        Matched {
            source: Source::Group("g".into()),
            status: ProvisioningStatus::Enabled,
            device_id: "d".into(),
            policy,
            hubs: hubs.iter().map(|h| h.to_string()).collect(),
            reprovision: ReprovisionPolicy {
                update_hub_assignment: update,
                migrate_device_data: true,
            },
        }
    }

    #[test]
    fn hashed_spreads_evenly_and_stably() {
        let linked: Vec<Arc<dyn LinkedHub>> = vec![Arc::new(Hub("b")), Arc::new(Hub("a"))];
        let m = matched(AllocationPolicy::Hashed, &[], true);
        let mut on_a = 0;
        for i in 0..1000 {
            let id = format!("dev-{i}");
            let first = choose(&m, &linked, &id, None).unwrap();
            assert_eq!(first.substatus, Substatus::InitialAssignment);
            let again = choose(&m, &linked, &id, Some(first.hub.host_name())).unwrap();
            assert_eq!(again.hub.host_name(), first.hub.host_name());
            assert_eq!(again.substatus, Substatus::ReprovisionedToInitialAssignment);
            on_a += usize::from(first.hub.host_name() == "a");
        }
        assert!((400..600).contains(&on_a), "{on_a} of 1000 on hub a");
    }

    #[test]
    fn static_needs_one_hub_and_reprovisioning_follows_the_policy() {
        let linked: Vec<Arc<dyn LinkedHub>> = vec![Arc::new(Hub("a")), Arc::new(Hub("b"))];
        assert!(
            choose(
                &matched(AllocationPolicy::Static, &[], true),
                &linked,
                "d",
                None
            )
            .is_err()
        );
        let to_b = matched(AllocationPolicy::Static, &["B"], true);
        let moved = choose(&to_b, &linked, "d", Some("a")).unwrap();
        assert_eq!(moved.hub.host_name(), "b");
        assert_eq!(moved.substatus, Substatus::DeviceDataMigrated);
        let stay = matched(AllocationPolicy::Static, &["b"], false);
        let kept = choose(&stay, &linked, "d", Some("a")).unwrap();
        assert_eq!(kept.hub.host_name(), "a");
        assert!(
            choose(
                &matched(AllocationPolicy::Hashed, &["c"], true),
                &linked,
                "d",
                None
            )
            .is_err()
        );
    }
}
