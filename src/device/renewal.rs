//! The renewal scheduler and the certificate swap of one device.
//!
//! A certificate is renewed at `renew_at` of its lifetime, moved by up to ± `renew_jitter` (drawn
//! per certificate, so a cohort issued together does not renew together). A failed try is retried
//! with jittered backoff while telemetry carries on, until `renew_deadline` of the lifetime; then
//! the device gives up and, if it reaches notAfter without a new certificate, counts as expired
//! before renewal. Each renewal makes a new key (`rekey: true`) or re-certifies the current one.
//!
//! The swap moves the connection to the new certificate: break-before-make closes the old session
//! and then connects; make-before-break connects while the old session is up (the hub drops the
//! old one when the new one arrives, IoT Hub's takeover rule) and then closes the old. Either
//! way the time without a usable session is recorded as `swap.gap`. Telemetry waits for its
//! PUBACK before the next message, so no QoS 1 message is in flight across a swap.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::lifecycle::{Device, Stop, local_failure};
use super::{
    CertificateAuthority, DeviceRegistry, DeviceSession, DeviceTransport, Issued, ServiceError,
};
use crate::crypto::DeviceKey;
use crate::metrics::{DeviceState, Outcome, Phase};
use crate::scenario::{Renewal, Swap};

/// How long make-before-break waits, once the new session is up, for the hub to drop the old.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// How a device renews, resolved from the scenario's `certificate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    /// Which EZCA call renews: as the enrollment agent, or as the device (certificate-JWT).
    pub path: Renewal,
    /// Share of the lifetime the renewal point may move either way (0.05 for ±5%).
    pub jitter: f64,
    /// Share of the lifetime after which failed renewals are no longer retried.
    pub deadline: f64,
    /// A new key per renewal.
    pub rekey: bool,
    pub swap: Swap,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            path: Renewal::EnrollmentAgent,
            jitter: 0.0,
            deadline: 0.95,
            rekey: true,
            swap: Swap::BreakBeforeMake,
        }
    }
}

/// When the device next tries to renew its current certificate, when it stops trying, and when
/// the certificate expires (`None` once renewal is off, e.g. after revocation).
pub(super) struct Schedule {
    pub next_try: Option<Instant>,
    deadline: Instant,
    pub expires: Option<Instant>,
    tries: u32,
}

impl Schedule {
    /// The next moment the schedule needs the device's attention.
    pub fn wake(&self, otherwise: Instant) -> Instant {
        self.next_try.or(self.expires).unwrap_or(otherwise)
    }

    /// No more renewals or expiry checks (the certificate was revoked).
    pub fn stop(&mut self) {
        self.next_try = None;
        self.expires = None;
    }
}

/// The instant on the runtime's clock of a wall-clock time (now if it has passed).
fn instant_of(at: time::OffsetDateTime) -> Instant {
    let from_now = at - time::OffsetDateTime::now_utc();
    Instant::now() + Duration::try_from(from_now).unwrap_or(Duration::ZERO)
}

impl<C, R, T> Device<'_, C, R, T>
where
    C: CertificateAuthority,
    R: DeviceRegistry,
    T: DeviceTransport,
{
    /// Plans the renewal of `issued`, a certificate the device just obtained.
    pub(super) fn schedule(&mut self, issued: &Issued) -> Schedule {
        let policy = self.spec.renewal;
        let shift = match policy.jitter > 0.0 {
            true => self.rng.random_range(-policy.jitter..=policy.jitter),
            false => 0.0,
        };
        let fraction = (self.spec.renew_fraction + shift).clamp(0.0, policy.deadline);
        let info = &issued.info;
        let renew_at = info.point_in_life(fraction);
        self.services
            .recorder
            .certs()
            .hold(&self.spec.id, renew_at.into(), info.not_after.into());
        Schedule {
            next_try: Some(instant_of(renew_at)),
            deadline: instant_of(info.point_in_life(policy.deadline)),
            expires: Some(instant_of(info.not_after)),
            tries: 0,
        }
    }

    /// One try at renewing `current`. `Some` holds the new certificate and, with rekey, its new
    /// key; `None` means the try failed and `schedule` says when to retry (or that the device
    /// gave up).
    pub(super) async fn try_renewal(
        &mut self,
        key: &DeviceKey,
        current: &Issued,
        schedule: &mut Schedule,
    ) -> Result<Option<(Option<DeviceKey>, Issued)>, Stop> {
        self.set_state(DeviceState::Renewing);
        let recorder = self.services.recorder.clone();
        let new_key = match self.spec.renewal.rekey {
            true => Some(self.new_key().await?),
            false => None,
        };
        let t = Instant::now();
        // A renewal CSR repeats the certificate's SANs, as EZCA's renewal client builds it.
        let csr = new_key
            .as_ref()
            .unwrap_or(key)
            .csr_pem_with_sans(&self.spec.id, &current.info.dns_sans)
            .map_err(|e| local_failure(Phase::Csr, "csr", e.to_string()))?;
        recorder.record(Phase::Csr, Outcome::Ok, t, Instant::now());

        // As at enrolment: the key and CSR are committed before the CA sees them (`--state`).
        if let Some(state) = &self.services.state {
            let used = new_key.as_ref().unwrap_or(key);
            state
                .intent(&self.spec.id, self.spec.index, true, used, &csr)
                .await
                .map_err(|e| local_failure(Phase::CaRenew, "state", e.to_string()))?;
        }
        let start = Instant::now();
        let ca = &self.services.ca;
        let result = tokio::select! {
            _ = self.stop.cancelled() => return Err(Stop::Stopped),
            r = ca.renew(&self.spec.id, current, key, csr, self.spec.validity_days, self.spec.renewal.path) => r,
        };
        let end = Instant::now();
        let outcome = result
            .as_ref()
            .map_or_else(ServiceError::outcome, |_| Outcome::Ok);
        recorder.record(Phase::CaRenew, outcome, start, end);
        recorder
            .certs()
            .renewal_try(start.into_std(), end.into_std(), result.is_ok());
        self.set_state(DeviceState::Online);
        match result {
            Ok(issued) => {
                if let Some(state) = &self.services.state {
                    let used = new_key.as_ref().unwrap_or(key);
                    state
                        .certificate(&self.spec.id, true, used, &issued.chain, &issued.info)
                        .await
                        .map_err(|e| local_failure(Phase::CaRenew, "state", e.to_string()))?;
                }
                self.report.issued(&issued);
                Ok(Some((new_key, issued)))
            }
            Err(e) => {
                recorder.error(Phase::CaRenew, &e.kind);
                tracing::debug!(device = %self.spec.id, error = %e, "renewal try failed");
                let delay = self
                    .services
                    .backoff
                    .delay(schedule.tries, &mut self.rng)
                    .max(e.retry_after.unwrap_or_default());
                schedule.tries += 1;
                let next = end + delay;
                if e.retryable() && next < schedule.deadline {
                    schedule.next_try = Some(next);
                } else {
                    // Past the deadline (or refused for good): run on with the current
                    // certificate; the expiry check counts it if it lapses.
                    schedule.next_try = None;
                    self.report.renewals_given_up += 1;
                    recorder.certs().renewal_given_up();
                }
                Ok(None)
            }
        }
    }

    /// A key for a renewal: the next generation of this device's keys from the run's key source
    /// (fresh keys are timed as `keygen`; pool keys are not generated here at all).
    async fn new_key(&mut self) -> Result<DeviceKey, Stop> {
        let generation = self.report.certificates_issued;
        let recorder = self.services.recorder.clone();
        self.services
            .keys
            .key_for(self.spec.key_kind, self.spec.index, generation, &recorder)
            .await
            .map_err(|e| local_failure(Phase::Keygen, "keygen", e.to_string()))
    }

    /// Moves from `old` to a session with the renewed certificate, as the policy says.
    pub(super) async fn swap(
        &mut self,
        mut old: T::Session,
        key: &DeviceKey,
        issued: &Issued,
    ) -> Result<T::Session, Stop> {
        let gap = match self.spec.renewal.swap {
            Swap::BreakBeforeMake => {
                let t0 = Instant::now();
                old.close().await;
                let new = self.connect(Phase::MqttReconnect, key, issued).await?;
                (new, t0.elapsed())
            }
            Swap::MakeBeforeBreak => {
                let mut closed_at = None;
                let result = {
                    let connect = self.connect(Phase::MqttReconnect, key, issued);
                    tokio::pin!(connect);
                    loop {
                        tokio::select! {
                            r = &mut connect => break r,
                            _ = old.closed(), if closed_at.is_none() => {
                                closed_at = Some(Instant::now());
                            }
                        }
                    }
                };
                let new = match result {
                    Ok(s) => s,
                    Err(stop) => {
                        old.close().await;
                        return Err(stop);
                    }
                };
                let ready = Instant::now();
                if closed_at.is_none() {
                    // The hub takes the old session over as it accepts the new one; the drop
                    // may reach us just after CONNACK, when there is no gap.
                    closed_at = tokio::time::timeout(TAKEOVER_WAIT, old.closed())
                        .await
                        .ok()
                        .map(|_| ready);
                }
                old.close().await;
                let gap = closed_at.map_or(Duration::ZERO, |c| ready.saturating_duration_since(c));
                (new, gap)
            }
        };
        let (session, gap) = gap;
        let now = Instant::now();
        self.services
            .recorder
            .record(Phase::SwapGap, Outcome::Ok, now - gap, now);
        self.report.swaps += 1;
        Ok(session)
    }
}
