//! A device of a resumed soak (`--state`) picks up the key and certificate the state holds for
//! it instead of enrolling again; its report starts from the stored renewals and serials.

use super::Issued;
use super::lifecycle::{DeviceReport, DeviceSpec};
use crate::crypto::{CertInfo, DeviceKey};
use crate::metrics::Phase;

/// Whether `issued` is past its notAfter now.
pub(super) fn expired(issued: &Issued) -> bool {
    issued.info.not_after <= time::OffsetDateTime::now_utc()
}

/// The stored key and certificate of `spec`, if the state holds them; `Err` stops the device
/// (a stored key that cannot be read is not silently replaced by a second enrolment).
pub(super) fn stored<E: From<(Phase, String)>>(
    spec: &DeviceSpec,
    report: &mut DeviceReport,
) -> Result<Option<(DeviceKey, Issued)>, E> {
    let Some(stored) = spec.resume.as_deref() else {
        return Ok(None);
    };
    report.renewals = stored.renewals;
    report.certificates_issued = stored.serials.len() as u64;
    let keep = stored
        .serials
        .len()
        .saturating_sub(super::lifecycle::SERIALS_KEPT);
    report.certificate_serials = stored.serials[keep..].to_vec();
    if !stored.has_certificate() {
        return Ok(None);
    }
    let fail = |e: String| E::from((Phase::CaIssue, e));
    let key = stored
        .key()
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("stored device has no key".into()))?;
    let info = CertInfo::parse(&stored.chain[0]).map_err(|e| fail(e.to_string()))?;
    report.chain = stored.chain.clone();
    Ok(Some((
        key,
        Issued {
            chain: stored.chain.clone(),
            info,
        },
    )))
}
