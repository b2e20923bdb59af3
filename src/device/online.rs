//! A connected device's life until the run stops: it sends telemetry when due
//! ([`super::telemetry`]), renews and swaps to the new certificate at the renewal point
//! ([`super::renewal`]), obeys the fleet's commands ([`super::revocation`]), answers the cloud
//! (`cloud`: what the session's incoming messages ask, one arm of [`operate`](Device::operate)'s
//! `select!`, and the effects of methods and desired properties: a new telemetry interval, a
//! renewal now, a reboot), and reconnects when the connection is lost (a revoked device is cut
//! off instead). Every new session (connect, reconnect, swap) is set up for the cloud again:
//! subscriptions, twin, reported properties, as the SDKs do.
//!
//! The cloud's steps are boxed where they are awaited, so a telemetry-only device's task is no
//! larger than before they existed.

use std::time::Duration;

use tokio::time::Instant;

use super::backends::{Backends, DeviceSession, Incoming, Issued, Session};
use super::cloud::{Applied, Cloud};
use super::control::Command;
use super::core::{Device, Stop};
use super::renewal::Schedule;
use super::telemetry::{Sent, Telemetry};
use crate::crypto::DeviceKey;
use crate::metrics::{DeviceState, Phase};

/// What an online device holds: its session, the key and certificate it connected with, the
/// certificate's renewal plan, and its dealings with the cloud (none for telemetry only).
struct Online<S> {
    session: S,
    key: DeviceKey,
    cert: Issued,
    schedule: Schedule,
    cloud: Option<Box<Cloud>>,
}

impl<B: Backends> Device<'_, B> {
    /// Runs the connected device (on `session`, with `key` and `cert`) until the run stops, the
    /// certificate lapses or a step fails for good.
    pub(super) async fn operate(
        &mut self,
        session: Session<B>,
        key: DeviceKey,
        cert: Issued,
        intended_start: Instant,
    ) -> Result<(), Stop> {
        let schedule = self.schedule(&cert);
        let mut online = Online {
            session,
            key,
            cert,
            schedule,
            cloud: self.spec.cloud.clone().map(|b| Box::new(Cloud::new(b))),
        };
        Box::pin(self.attach(&mut online)).await?;
        let mut inbox = self.spec.control.clone();
        let mut telemetry = Telemetry::new(self.spec, intended_start);
        let stop = self.stop;
        loop {
            let wake = online.schedule.wake(telemetry.due).min(telemetry.due);
            let cloud_wake = online.cloud.as_ref().and_then(|c| c.wake());
            let wake = cloud_wake.map_or(wake, |c| c.min(wake));
            tokio::select! {
                _ = stop.cancelled() => break,
                command = inbox.next() => {
                    self.obey(command, &mut online).await?;
                    continue;
                }
                incoming = online.session.incoming() => {
                    online = Box::pin(self.hear(online, &mut telemetry, incoming)).await?;
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if cloud_wake.is_some_and(|at| at <= now) {
                online = Box::pin(self.cloud_turn(online, &mut telemetry, now)).await?;
                continue;
            }
            if online.schedule.renewal_due(now) {
                online = Box::pin(self.renew(online)).await?;
                continue;
            }
            if online.schedule.expired(now) {
                return Err(self.expired(online.session).await);
            }
            if now < telemetry.due {
                continue;
            }
            match self
                .send_telemetry(&mut online.session, &mut telemetry)
                .await
            {
                Sent::Delivered | Sent::TooLarge => {}
                Sent::Failed => self.reconnect(&mut online).await?,
                Sent::Stopped => break,
            }
        }
        self.report.online_at_end = true;
        online.session.close().await;
        Ok(())
    }

    /// What the session heard: the connection lost, or a message from the cloud.
    async fn hear(
        &mut self,
        mut online: Online<Session<B>>,
        telemetry: &mut Telemetry,
        incoming: Incoming,
    ) -> Result<Online<Session<B>>, Stop> {
        let delivery = match incoming {
            Incoming::Closed(_) => {
                self.reconnect(&mut online).await?;
                return Ok(online);
            }
            Incoming::Message(delivery) => delivery,
        };
        let Some(cloud) = online.cloud.as_deref_mut() else {
            tracing::debug!(device = %self.spec.id, topic = %delivery.topic, "a message no subscription asked for");
            return Ok(online);
        };
        let effects = self
            .cloud_message(&mut online.session, cloud, delivery)
            .await;
        self.carry_out(online, telemetry, effects).await
    }

    /// Answers due and twin requests given up on, and what the answered methods ask.
    async fn cloud_turn(
        &mut self,
        mut online: Online<Session<B>>,
        telemetry: &mut Telemetry,
        now: Instant,
    ) -> Result<Online<Session<B>>, Stop> {
        let Some(cloud) = online.cloud.as_deref_mut() else {
            return Ok(online);
        };
        let effects = self.cloud_due(&mut online.session, cloud, now).await;
        self.carry_out(online, telemetry, effects).await
    }

    /// Does what methods and desired properties asked, in order.
    async fn carry_out(
        &mut self,
        mut online: Online<Session<B>>,
        telemetry: &mut Telemetry,
        effects: Vec<Applied>,
    ) -> Result<Online<Session<B>>, Stop> {
        for effect in effects {
            match effect {
                Applied::SetInterval(every) => {
                    telemetry.set_interval(every);
                    self.report.cloud.interval_set = Some(every);
                }
                // A revoked device renews no more (its schedule is stopped).
                Applied::Renew => online.schedule.renew_now(Instant::now()),
                Applied::Reconnect(downtime) => online = self.reboot(online, downtime).await?,
            }
        }
        Ok(online)
    }

    /// Disconnects cleanly, stays away for `downtime`, connects again (`mqtt.reconnect`).
    async fn reboot(
        &mut self,
        online: Online<Session<B>>,
        downtime: Duration,
    ) -> Result<Online<Session<B>>, Stop> {
        let Online {
            session,
            key,
            cert,
            schedule,
            cloud,
        } = online;
        session.close().await;
        self.set_state(DeviceState::Connecting);
        tokio::select! {
            _ = self.stop.cancelled() => return Err(Stop::Stopped),
            _ = tokio::time::sleep(downtime) => {}
        }
        let session = self.connection_lost(&key, &cert).await?;
        let mut online = Online {
            session,
            key,
            cert,
            schedule,
            cloud,
        };
        self.attach(&mut online).await?;
        Ok(online)
    }

    /// Sets a new session up for the cloud (subscriptions, twin, reported properties). A hub
    /// that refuses (closing the connection, as IoT Hub does) is counted and waited out with
    /// backoff, so a fleet the hub will not serve does not reconnect in a tight loop.
    async fn attach(&mut self, online: &mut Online<Session<B>>) -> Result<(), Stop> {
        let Some(cloud) = online.cloud.as_deref_mut() else {
            return Ok(());
        };
        let Err(e) = self.cloud_connected(&mut online.session, cloud).await else {
            cloud.failures = 0;
            return Ok(());
        };
        self.note_error(Phase::MqttConnect, &format!("subscribe_{}", e.kind));
        let delay = self
            .services
            .backoff
            .delay(cloud.failures, &mut self.rng)
            .max(e.retry_after.unwrap_or_default());
        cloud.failures = cloud.failures.saturating_add(1);
        tokio::select! {
            _ = self.stop.cancelled() => Err(Stop::Stopped),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// A command from the fleet: revoke the certificate (and then renew no more).
    async fn obey(
        &mut self,
        command: Command,
        online: &mut Online<Session<B>>,
    ) -> Result<(), Stop> {
        if let Command::Revoke(method) = command {
            Box::pin(self.revoke(method, &online.key, &online.cert)).await?;
            if self.is_revoked() {
                online.schedule.stop();
            }
        }
        Ok(())
    }

    /// The renewal point: one try, and on success the swap to the new certificate and the new
    /// certificate's renewal plan.
    async fn renew(&mut self, mut online: Online<Session<B>>) -> Result<Online<Session<B>>, Stop> {
        let renewed = self
            .try_renewal(&online.key, &online.cert, &mut online.schedule)
            .await?;
        let Some((new_key, cert)) = renewed else {
            return Ok(online);
        };
        // Counted once the certificate is issued (and, with --state, committed), as the CA and
        // the state count it, whether or not the run ends during the swap that follows.
        self.report.renewals += 1;
        let key = new_key.unwrap_or(online.key);
        let session = self.swap(online.session, &key, &cert).await?;
        let schedule = self.schedule(&cert);
        let mut online = Online {
            session,
            key,
            cert,
            schedule,
            cloud: online.cloud,
        };
        self.attach(&mut online).await?;
        Ok(online)
    }

    /// The session was lost: a revoked device records its cut-off and tries once more
    /// ([`Device::cut_off`]); any other reconnects, with retries.
    async fn reconnect(&mut self, online: &mut Online<Session<B>>) -> Result<(), Stop> {
        online.session = Box::pin(self.connection_lost(&online.key, &online.cert)).await?;
        Box::pin(self.attach(online)).await
    }

    async fn connection_lost(
        &mut self,
        key: &DeviceKey,
        cert: &Issued,
    ) -> Result<Session<B>, Stop> {
        if self.is_revoked() {
            return self.cut_off(key, cert).await;
        }
        self.set_state(DeviceState::Connecting);
        let session = self.connect(Phase::MqttReconnect, key, cert).await?;
        self.set_state(DeviceState::Online);
        Ok(session)
    }
}
