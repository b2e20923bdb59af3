//! A connected device's life until the run stops: it sends telemetry when due
//! ([`super::telemetry`]), renews and swaps to the new certificate at the renewal point
//! ([`super::renewal`]), obeys the fleet's commands ([`super::revocation`]), and reconnects when
//! the connection is lost (a revoked device is cut off instead).
//!
//! Cloud-to-device behaviours (twin desired properties, direct methods, C2D messages) belong here
//! as one more arm of [`operate`](Device::operate)'s `select!` (the session's incoming
//! messages), each handled by a step in its own file, like telemetry.

use tokio::time::Instant;

use super::backends::{Backends, DeviceSession, Issued, Session};
use super::control::Command;
use super::core::{Device, Stop};
use super::renewal::Schedule;
use super::telemetry::{Sent, Telemetry};
use crate::crypto::DeviceKey;
use crate::metrics::{DeviceState, Phase};

/// What an online device holds: its session, the key and certificate it connected with, and
/// the certificate's renewal plan.
struct Online<S> {
    session: S,
    key: DeviceKey,
    cert: Issued,
    schedule: Schedule,
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
        };
        let mut inbox = self.spec.control.clone();
        let mut telemetry = Telemetry::new(self.spec, intended_start);
        let stop = self.stop;
        loop {
            let wake = online.schedule.wake(telemetry.due).min(telemetry.due);
            tokio::select! {
                _ = stop.cancelled() => break,
                command = inbox.next() => {
                    self.obey(command, &mut online).await?;
                    continue;
                }
                _ = online.session.closed() => {
                    self.reconnect(&mut online).await?;
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
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
        Ok(Online {
            session,
            key,
            cert,
            schedule,
        })
    }

    /// The session was lost: a revoked device records its cut-off and tries once more
    /// ([`Device::cut_off`]); any other reconnects, with retries.
    async fn reconnect(&mut self, online: &mut Online<Session<B>>) -> Result<(), Stop> {
        online.session = Box::pin(self.connection_lost(&online.key, &online.cert)).await?;
        Ok(())
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
