//! Revocation of one device's certificate when the fleet says so (a scenario event): by the
//! device itself (certificate-JWT) or by an administrator (thumbprint), through the
//! [`CertificateAuthority`]. The device then stops renewing and stays in state `revoked`.
//!
//! What follows depends on the hub. With EZCA's "disable device on revoke", the hub drops the
//! connection: the time from the revocation to the device seeing its connection lost is
//! `revoke.cutoff`, and the device tries once to reconnect (the hub should refuse it; then it is
//! cut off and waits for the run to end). Without it, IoT Hub does not check revocation and the
//! device stays connected, sending telemetry: the report counts it as still online after
//! revocation.

use tokio::time::Instant;

use super::backends::{Backends, CertificateAuthority, Issued, Session};
use super::core::{Device, RevocationReport, Stop};
use crate::crypto::DeviceKey;
use crate::metrics::{DeviceState, Outcome, Phase};
use crate::scenario::RevokeMethod;

impl<B: Backends> Device<'_, B> {
    /// Revokes the current certificate with `method`. A failure is counted and reported, and
    /// the device carries on.
    pub(super) async fn revoke(
        &mut self,
        method: RevokeMethod,
        key: &DeviceKey,
        current: &Issued,
    ) -> Result<(), Stop> {
        if self.report.revocation.is_some() {
            return Ok(());
        }
        let t = Instant::now();
        let ca = &self.services.ca;
        let result = tokio::select! {
            _ = self.stop.cancelled() => return Err(Stop::Stopped),
            r = ca.revoke(&self.spec.id, current, key, method) => r,
        };
        let error = match result {
            Ok(()) => {
                self.revoked_at = Some(t);
                self.services.recorder.certs().revoked(&self.spec.id);
                self.set_state(DeviceState::Revoked);
                None
            }
            Err(e) => {
                self.note_error(Phase::RevokeCutoff, &e.kind);
                tracing::debug!(device = %self.spec.id, error = %e, "revocation failed");
                Some(e.to_string())
            }
        };
        self.report.revocation = Some(RevocationReport {
            method,
            error,
            cutoff: None,
            reconnect_refused: false,
        });
        Ok(())
    }

    /// The connection of a revoked device was lost: records the cut-off and tries once to
    /// reconnect. When the hub refuses, the device is cut off for good: it waits for the run
    /// to end (`Stop::Stopped`).
    pub(super) async fn cut_off(
        &mut self,
        key: &DeviceKey,
        current: &Issued,
    ) -> Result<Session<B>, Stop> {
        let now = Instant::now();
        let recorder = &self.services.recorder;
        let revoked_at = self.revoked_at.unwrap_or(now);
        if let Some(r) = &mut self.report.revocation
            && r.cutoff.is_none()
        {
            r.cutoff = Some(now - revoked_at);
            recorder.record(Phase::RevokeCutoff, Outcome::Ok, revoked_at, now);
        }
        let transport = &self.services.transport;
        // Its hub: the assigned one, if DPS placed it (a revoked device does not re-provision).
        let hub = self.report.assigned_hub.as_deref();
        let result = tokio::select! {
            _ = self.stop.cancelled() => return Err(Stop::Stopped),
            r = super::connect::open::<B>(transport, hub, &self.spec.id, current.chain.clone(), key) => r,
        };
        match result {
            Ok(session) => {
                self.report.connects += 1;
                Ok(session)
            }
            Err(e) => {
                self.note_error(Phase::MqttReconnect, &e.kind);
                if let Some(r) = &mut self.report.revocation {
                    r.reconnect_refused = true;
                }
                self.stop.cancelled().await;
                Err(Stop::Stopped)
            }
        }
    }
}
