//! Which enrolment admits a device, as DPS decides (reference §6): an individual enrolment for
//! the registration id holding the device's own certificate first; otherwise the enrolment group
//! whose signing certificate is the most specific issuer in the device's chain (nearest the
//! leaf), down to the root. The match is final: a disabled one refuses the device even when a
//! broader enabled group would have taken it.

use std::collections::BTreeMap;

use rustls_pki_types::{CertificateDer, UnixTime};

use super::enrollment::{
    AllocationPolicy, EnrollmentGroup, IndividualEnrollment, ProvisioningStatus, ReprovisionPolicy,
    Stored,
};

/// Every enrolment of the service.
#[derive(Default)]
pub(super) struct Enrollments {
    pub groups: BTreeMap<String, Stored<EnrollmentGroup>>,
    pub individuals: BTreeMap<String, Stored<IndividualEnrollment>>,
}

/// Which enrolment admitted a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Group(String),
    Individual(String),
}

/// What allocation needs of the matching enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Matched {
    pub source: Source,
    pub status: ProvisioningStatus,
    /// The hub device id: the registration id, or an individual enrolment's `deviceId`.
    pub device_id: String,
    pub policy: AllocationPolicy,
    /// Hub host names the enrolment names (empty: any linked hub).
    pub hubs: Vec<String>,
    pub reprovision: ReprovisionPolicy,
}

fn valid_now(der: &[u8]) -> bool {
    crate::crypto::CertInfo::parse(der).is_ok_and(|i| {
        let now = time::OffsetDateTime::now_utc();
        i.not_before <= now && now <= i.not_after
    })
}

impl Enrollments {
    /// The enrolment that admits `registration_id` presenting `chain` (leaf first), if any.
    pub fn find(
        &self,
        registration_id: &str,
        chain: &[CertificateDer<'static>],
    ) -> Option<Matched> {
        let leaf = chain.first()?;
        if let Some(e) = self.individuals.get(registration_id)
            && e.certs.iter().any(|c| c == leaf)
            && valid_now(leaf)
        {
            let s = &e.reply.settings;
            return Some(Matched {
                source: Source::Individual(e.reply.registration_id.clone()),
                status: s.provisioning_status,
                device_id: e
                    .reply
                    .device_id
                    .clone()
                    .unwrap_or_else(|| registration_id.to_string()),
                policy: s.allocation_policy.unwrap_or(AllocationPolicy::Hashed),
                hubs: s.hub_names(),
                reprovision: s.reprovision_policy,
            });
        }
        let (_, group) = self
            .groups
            .values()
            .filter_map(|g| Some((issuer_depth(g, chain)?, g)))
            .min_by_key(|(depth, _)| *depth)?;
        let s = &group.reply.settings;
        Some(Matched {
            source: Source::Group(group.reply.enrollment_group_id.clone()),
            status: s.provisioning_status,
            device_id: registration_id.to_string(),
            policy: s.allocation_policy.unwrap_or(AllocationPolicy::Hashed),
            hubs: s.hub_names(),
            reprovision: s.reprovision_policy,
        })
    }
}

/// How far from the leaf the group's signing certificate sits in the chain it verifies (1: the
/// leaf's issuer), or `None` when the chain does not reach it.
fn issuer_depth(
    group: &Stored<EnrollmentGroup>,
    chain: &[CertificateDer<'static>],
) -> Option<usize> {
    let verifier = group.verifier.as_ref()?;
    let (leaf, intermediates) = chain.split_first()?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .ok()?;
    let depth = group
        .certs
        .iter()
        .filter_map(|c| chain.iter().skip(1).position(|x| x == c).map(|i| i + 1))
        .min()
        // Not presented: the anchor sits above the last certificate the device sent.
        .unwrap_or(chain.len());
    Some(depth)
}
