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

use super::backends::{
    Backends, CertificateAuthority, DeviceSession, Issued, ServiceError, Session,
};
use super::core::{Device, Stop, local_failure, make_before_break};
use crate::crypto::DeviceKey;
use crate::metrics::{DeviceState, Outcome, Phase};
use crate::scenario::Swap;

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

    /// Renew at `now` (a command from the cloud), unless renewal is off (revoked).
    pub fn renew_now(&mut self, now: Instant) {
        if self.expires.is_some() {
            self.next_try = Some(now);
        }
    }

    /// Whether a renewal try is due at `now`.
    pub fn renewal_due(&self, now: Instant) -> bool {
        self.next_try.is_some_and(|at| now >= at)
    }

    /// Whether the certificate has reached notAfter at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

/// The instant on the runtime's clock of a wall-clock time (now if it has passed).
fn instant_of(at: time::OffsetDateTime) -> Instant {
    let from_now = at - time::OffsetDateTime::now_utc();
    Instant::now() + Duration::try_from(from_now).unwrap_or(Duration::ZERO)
}

impl<B: Backends> Device<'_, B> {
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
        if let Some(board) = self.services.recorder.board() {
            board.set_expiry(self.spec.index, info.not_after.into());
        }
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
        let new_key = match self.spec.renewal.rekey {
            true => Some(self.next_key().await?),
            false => None,
        };
        let used = new_key.as_ref().unwrap_or(key);
        // A renewal CSR repeats the certificate's SANs, as EZCA's renewal client builds it.
        let csr = self.csr(used, &current.info.dns_sans)?;
        // As at enrolment: the key and CSR are committed before the CA sees them (`--state`).
        self.journal_intent(Phase::CaRenew, true, used, &csr)
            .await?;
        let (result, end) = self.request_renewal(key, current, csr).await?;
        self.set_state(DeviceState::Online);
        match result {
            Ok(issued) => {
                self.journal_certificate(Phase::CaRenew, true, used, &issued)
                    .await?;
                self.report.issued(&issued);
                Ok(Some((new_key, issued)))
            }
            Err(e) => {
                self.renewal_failed(&e, end, schedule);
                Ok(None)
            }
        }
    }

    /// The CA's answer to one renewal request, and when it came; timed as `ca.renew` and
    /// counted in the certificate health.
    async fn request_renewal(
        &mut self,
        key: &DeviceKey,
        current: &Issued,
        csr: String,
    ) -> Result<(Result<Issued, ServiceError>, Instant), Stop> {
        let (spec, recorder) = (self.spec, &self.services.recorder);
        let start = Instant::now();
        let ca = &self.services.ca;
        let renewal = ca.renew(
            &spec.id,
            current,
            key,
            csr,
            spec.validity_days,
            spec.renewal.path,
        );
        let Some(result) = self.answer_of(renewal).await else {
            return Err(Stop::Stopped);
        };
        let end = Instant::now();
        let outcome = result
            .as_ref()
            .map_or_else(ServiceError::outcome, |_| Outcome::Ok);
        recorder.record(Phase::CaRenew, outcome, start, end);
        recorder
            .certs()
            .renewal_try(start.into_std(), end.into_std(), result.is_ok());
        Ok((result, end))
    }

    /// A renewal try failed at `end`: retry after a backoff while that is before the deadline,
    /// else give up and run on with the current certificate (the expiry check counts it if it
    /// lapses).
    fn renewal_failed(&mut self, e: &ServiceError, end: Instant, schedule: &mut Schedule) {
        let recorder = &self.services.recorder;
        self.note_error(Phase::CaRenew, &e.kind);
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
            schedule.next_try = None;
            self.report.renewals_given_up += 1;
            recorder.certs().renewal_given_up();
        }
    }

    /// Renewal gave up and the certificate lapsed: the hub would refuse the next connection, so
    /// the device is out.
    pub(super) async fn expired(&mut self, session: Session<B>) -> Stop {
        self.report.expired_before_renewal = true;
        self.services.recorder.certs().expired_before_renewal();
        session.close().await;
        local_failure(
            Phase::CaRenew,
            "expired_before_renewal",
            "the certificate expired before a renewal succeeded".into(),
        )
    }

    /// Moves from `old` to a session with the renewed certificate, as the policy says.
    pub(super) async fn swap(
        &mut self,
        old: Session<B>,
        key: &DeviceKey,
        issued: &Issued,
    ) -> Result<Session<B>, Stop> {
        let (session, gap) = match self.spec.renewal.swap {
            Swap::BreakBeforeMake => {
                let t0 = Instant::now();
                old.close().await;
                let new = self.connect(Phase::MqttReconnect, key, issued).await?;
                (new, t0.elapsed())
            }
            Swap::MakeBeforeBreak => {
                make_before_break(old, self.connect(Phase::MqttReconnect, key, issued)).await?
            }
        };
        let now = Instant::now();
        self.services
            .recorder
            .record(Phase::SwapGap, Outcome::Ok, now - gap, now);
        self.report.swaps += 1;
        Ok(session)
    }
}
