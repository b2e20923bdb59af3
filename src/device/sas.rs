//! The life of a symmetric-key (SAS) device, and its migration to a certificate:
//!
//! 1. `hub.register`: a SAS identity, with the keys the hub generates (the device keeps the
//!    primary) or with a key derived from the run's group key;
//! 2. `mqtt.connect` with a SAS token it signs (`sr={hub}/devices/{id}`, `se` = now + TTL);
//! 3. online: telemetry, and at `renew_at` of the token's lifetime `sas.renew`: a new token and
//!    a new session with it, swapped as a renewed certificate is (break-before-make or
//!    make-before-break, the gap recorded as `swap.gap`); a lost session reconnects with a new
//!    token;
//! 4. told to migrate (a `migrate` event, paced by its rate): `migrate.issue` (a key and an EZCA
//!    certificate, as an X.509 device enrols), `migrate.update` (the identity switched to
//!    `certificateAuthority` under its etag), `migrate.reconnect` (the SAS session closed, a
//!    session with the certificate opened), and from then on the life of an X.509 device
//!    ([`Device::operate`]).
//!
//! Telemetry waits for each PUBACK before the next message, so no QoS 1 message is in flight
//! when a session is closed for a renewal or the migration.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::backends::{
    Backends, DeviceRegistry, DeviceSession, DeviceTransport, Incoming, Session,
};
use super::control::Command;
use super::core::{Device, Stop, local_failure, make_before_break};
use super::sas_hub::{SasPolicy, derived_key};
use super::telemetry::{Sent, Telemetry};
use crate::metrics::auth_gauge::AuthType;
use crate::metrics::{DeviceState, Outcome, Phase};
use crate::scenario::Swap;

/// A SAS device's live session: the session, the key it signs with, when to renew its token.
struct SasOnline<S> {
    session: S,
    key: String,
    renew_at: Instant,
}

/// Why the SAS loop ended.
enum SasEnd<S> {
    /// The run stopped; the session is still up.
    Stopped(S),
    /// The fleet told the device to migrate and its time came.
    Migrate(S),
}

/// Unix seconds `ttl` from now.
fn expiry_after(ttl: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (now + ttl).as_secs()
}

impl<B: Backends> Device<'_, B> {
    /// The whole life of a SAS device (see the module's steps).
    pub(super) async fn live_sas(
        &mut self,
        policy: SasPolicy,
        intended_start: Instant,
    ) -> Result<(), Stop> {
        let key = Box::pin(self.register_sas(&policy)).await?;
        self.services.recorder.identity(None, AuthType::Sas);
        self.report.enrolled = true;
        self.set_state(DeviceState::Connecting);
        self.services.gate.enrolment_done(self.spec.index);
        let session = Box::pin(self.connect_sas(Phase::MqttConnect, &key, &policy)).await?;
        self.report.connected = true;
        self.set_state(DeviceState::Online);
        let online = SasOnline {
            session,
            key,
            renew_at: self.renewal_point(&policy),
        };
        match Box::pin(self.operate_sas(online, &policy, intended_start)).await? {
            SasEnd::Stopped(session) => {
                self.report.online_at_end = true;
                session.close().await;
                Ok(())
            }
            SasEnd::Migrate(session) => self.migrate(session, intended_start).await,
        }
    }

    /// When a token signed now is renewed.
    fn renewal_point(&self, policy: &SasPolicy) -> Instant {
        let fraction = policy.renew_fraction.clamp(0.05, 1.0);
        Instant::now() + policy.token_ttl.mul_f64(fraction)
    }

    /// The device's SAS identity and the key it signs with.
    async fn register_sas(&mut self, policy: &SasPolicy) -> Result<String, Stop> {
        let Some(registry) = &self.services.registry else {
            return Err(local_failure(
                Phase::HubRegister,
                "no_registry",
                "a SAS device creates its identity in the hub's registry, and this run has none"
                    .into(),
            ));
        };
        let id = self.spec.id.as_str();
        let own = policy.group_key.map(|g| derived_key(&g, id));
        self.attempt(Phase::HubRegister, || {
            registry.register_sas(id, own.clone())
        })
        .await
    }

    /// A session with a token signed now; each try is timed as `phase`.
    async fn connect_sas(
        &mut self,
        phase: Phase,
        key: &str,
        policy: &SasPolicy,
    ) -> Result<Session<B>, Stop> {
        let transport = &self.services.transport;
        let (id, ttl) = (self.spec.id.as_str(), policy.token_ttl);
        let hub = self.report.assigned_hub.clone();
        let session = self
            .attempt(phase, || {
                transport.connect_sas(hub.as_deref(), id, key, expiry_after(ttl))
            })
            .await?;
        self.report.connects += 1;
        Ok(session)
    }

    /// Telemetry, token renewals and reconnects until the run stops or the device migrates.
    async fn operate_sas(
        &mut self,
        mut online: SasOnline<Session<B>>,
        policy: &SasPolicy,
        intended_start: Instant,
    ) -> Result<SasEnd<Session<B>>, Stop> {
        let mut inbox = self.spec.control.clone();
        let mut telemetry = Telemetry::new(self.spec, intended_start);
        let mut migrate_at: Option<Instant> = None;
        let stop = self.stop;
        loop {
            let wake = telemetry.due.min(online.renew_at);
            let wake = migrate_at.map_or(wake, |m| m.min(wake));
            tokio::select! {
                _ = stop.cancelled() => return Ok(SasEnd::Stopped(online.session)),
                command = inbox.next() => {
                    if let Command::Migrate(after) = command {
                        migrate_at = Some(Instant::now() + after);
                    }
                    continue;
                }
                incoming = online.session.incoming() => {
                    if let Incoming::Closed(why) = incoming {
                        tracing::debug!(device = %self.spec.id, %why, "SAS session lost");
                        self.reconnect_sas(&mut online, policy).await?;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if migrate_at.is_some_and(|at| at <= now) {
                return Ok(SasEnd::Migrate(online.session));
            }
            if online.renew_at <= now {
                online = Box::pin(self.renew_token(online, policy)).await?;
                continue;
            }
            if now < telemetry.due {
                continue;
            }
            match self
                .send_telemetry(&mut online.session, &mut telemetry)
                .await
            {
                Sent::Delivered | Sent::TooLarge => {}
                Sent::Failed => self.reconnect_sas(&mut online, policy).await?,
                Sent::Stopped => return Ok(SasEnd::Stopped(online.session)),
            }
        }
    }

    /// The session was lost (or its token expired): a new token, a new session.
    async fn reconnect_sas(
        &mut self,
        online: &mut SasOnline<Session<B>>,
        policy: &SasPolicy,
    ) -> Result<(), Stop> {
        self.set_state(DeviceState::Connecting);
        let key = online.key.clone();
        online.session = Box::pin(self.connect_sas(Phase::MqttReconnect, &key, policy)).await?;
        online.renew_at = self.renewal_point(policy);
        self.set_state(DeviceState::Online);
        Ok(())
    }

    /// `sas.renew`: a session with a new token in place of the old one, swapped as the
    /// cohort's certificate swap says; timed from the renewal point to the new session.
    async fn renew_token(
        &mut self,
        online: SasOnline<Session<B>>,
        policy: &SasPolicy,
    ) -> Result<SasOnline<Session<B>>, Stop> {
        let start = Instant::now();
        let SasOnline { session, key, .. } = online;
        let swapped = match self.spec.renewal.swap {
            Swap::BreakBeforeMake => {
                session.close().await;
                self.connect_sas(Phase::MqttReconnect, &key, policy)
                    .await
                    .map(|s| (s, start.elapsed()))
            }
            Swap::MakeBeforeBreak => {
                let connect = self.connect_sas(Phase::MqttReconnect, &key, policy);
                make_before_break(session, connect).await
            }
        };
        let end = Instant::now();
        let recorder = &self.services.recorder;
        let (session, gap) = match swapped {
            Ok(done) => done,
            Err(stop) => {
                recorder.record(Phase::SasRenew, Outcome::Error, start, end);
                return Err(stop);
            }
        };
        recorder.record(Phase::SasRenew, Outcome::Ok, start, end);
        recorder.record(Phase::SwapGap, Outcome::Ok, end - gap, end);
        self.report.swaps += 1;
        Ok(SasOnline {
            session,
            key,
            renew_at: self.renewal_point(policy),
        })
    }

    /// The migration to a certificate, then the life of an X.509 device.
    async fn migrate(&mut self, session: Session<B>, intended_start: Instant) -> Result<(), Stop> {
        let recorder = self.services.recorder.clone();
        self.set_state(DeviceState::Renewing);
        let start = Instant::now();
        let issued = Box::pin(self.obtain_certificate()).await;
        let outcome = if issued.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Error
        };
        recorder.record(Phase::MigrateIssue, outcome, start, Instant::now());
        let (key, issued) = issued?;
        let id = self.spec.id.clone();
        if let Some(registry) = &self.services.registry {
            self.attempt(Phase::MigrateUpdate, || registry.use_certificates(&id))
                .await?;
        }
        let recorder = &self.services.recorder;
        recorder.identity(Some(AuthType::Sas), AuthType::X509);
        session.close().await;
        self.set_state(DeviceState::Connecting);
        let session = Box::pin(self.connect(Phase::MigrateReconnect, &key, &issued)).await?;
        self.report.migrated = true;
        self.set_state(DeviceState::Online);
        self.operate(session, key, issued, intended_start).await
    }
}
