//! A device and the soak state (`--state`). A resumed device picks up the key and certificate
//! the state holds for it instead of enrolling again, and its report starts from the stored
//! renewals and serials. Every device commits to the state what a resumed run must know: the key
//! and CSR before the CA sees them (an intent), the certificate before the device uses it, and
//! its registration.

use super::backends::{Backends, Issued};
use super::core::{Device, DeviceReport, DeviceSpec, SERIALS_KEPT, Stop, local_failure};
use crate::crypto::{CertInfo, DeviceKey};
use crate::metrics::Phase;

/// Whether `issued` is past its notAfter now.
pub(super) fn expired(issued: &Issued) -> bool {
    issued.info.not_after <= time::OffsetDateTime::now_utc()
}

/// The stored key and certificate of `spec`, if the state holds them; `Err` stops the device
/// (a stored key that cannot be read is not silently replaced by a second enrolment).
pub(super) fn stored(
    spec: &DeviceSpec,
    report: &mut DeviceReport,
) -> Result<Option<(DeviceKey, Issued)>, Stop> {
    let Some(stored) = spec.resume.as_deref() else {
        return Ok(None);
    };
    report.renewals = stored.renewals;
    report.certificates_issued = stored.serials.len() as u64;
    let keep = stored.serials.len().saturating_sub(SERIALS_KEPT);
    report.certificate_serials = stored.serials[keep..].to_vec();
    if !stored.has_certificate() {
        return Ok(None);
    }
    let fail = |e: String| local_failure(Phase::CaIssue, "state", e);
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

impl<B: Backends> Device<'_, B> {
    /// Commits `key` and `csr` before the CA sees them, so a kill while the CA answers leaves
    /// an intent a resumed run can match to what the CA issued. `again`: a re-issue or renewal.
    pub(super) async fn journal_intent(
        &self,
        phase: Phase,
        again: bool,
        key: &DeviceKey,
        csr: &str,
    ) -> Result<(), Stop> {
        let Some(state) = &self.services.state else {
            return Ok(());
        };
        state
            .intent(&self.spec.id, self.spec.index, again, key, csr)
            .await
            .map_err(|e| local_failure(phase, "state", e.to_string()))
    }

    /// Commits a certificate before the device uses it (or a resumed run would not know it).
    pub(super) async fn journal_certificate(
        &self,
        phase: Phase,
        again: bool,
        key: &DeviceKey,
        issued: &Issued,
    ) -> Result<(), Stop> {
        let Some(state) = &self.services.state else {
            return Ok(());
        };
        state
            .certificate(&self.spec.id, again, key, &issued.chain, &issued.info)
            .await
            .map_err(|e| local_failure(phase, "state", e.to_string()))
    }

    /// Commits that the device's hub identity exists.
    pub(super) async fn journal_registered(&self) -> Result<(), Stop> {
        let Some(state) = &self.services.state else {
            return Ok(());
        };
        state
            .registered(&self.spec.id)
            .await
            .map_err(|e| local_failure(Phase::HubRegister, "state", e.to_string()))
    }
}
