//! Connecting to the hub with the device's certificate (`mqtt.connect` at first,
//! `mqtt.reconnect` afterwards), with retries: to the hub a provisioning service assigned, if
//! one did, or else to the run's hub.
//!
//! A provisioned device whose hub refuses it registers again, as the reference's §7 guidance
//! says: at once when the hub refuses for good (CONNACK 4/5: not authorized, e.g. an unknown
//! device), or when every try failed (repeated failures), and then connects where it was placed,
//! at most [`REPROVISIONS`] times per connect.

use rustls_pki_types::CertificateDer;

use super::backends::{Backends, DeviceTransport, Issued, ServiceError, Session};
use super::core::{Device, Stop};
use crate::crypto::DeviceKey;
use crate::metrics::Phase;

/// Registrations again within one connect step, before the device gives up.
pub(super) const REPROVISIONS: u32 = 2;

/// One try to open a session as `device_id` to `hub` (the assigned hub), or to the run's hub.
pub(super) async fn open<B: Backends>(
    transport: &B::Transport,
    hub: Option<&str>,
    device_id: &str,
    chain: Vec<CertificateDer<'static>>,
    key: &DeviceKey,
) -> Result<Session<B>, ServiceError> {
    match hub {
        Some(hub) => transport.connect_to(hub, device_id, chain, key).await,
        None => transport.connect(device_id, chain, key).await,
    }
}

impl<B: Backends> Device<'_, B> {
    /// A session presenting `issued`, proving possession of `key`; each try is timed as `phase`.
    pub(super) async fn connect(
        &mut self,
        phase: Phase,
        key: &DeviceKey,
        issued: &Issued,
    ) -> Result<Session<B>, Stop> {
        let transport = &self.services.transport;
        let id = self.spec.id.as_str();
        let mut reprovisions = 0;
        loop {
            let hub = self.report.assigned_hub.clone();
            let tried = self
                .attempt(phase, || {
                    open::<B>(transport, hub.as_deref(), id, issued.chain.clone(), key)
                })
                .await;
            match tried {
                Ok(session) => {
                    self.report.connects += 1;
                    return Ok(session);
                }
                Err(Stop::Failed(_, e)) if hub.is_some() && reprovisions < REPROVISIONS => {
                    tracing::debug!(device = %id, hub = ?hub, error = %e, "the assigned hub refused the device: provisioning again");
                    reprovisions += 1;
                    Box::pin(self.provision(key, issued)).await?;
                }
                Err(stop) => return Err(stop),
            }
        }
    }
}
