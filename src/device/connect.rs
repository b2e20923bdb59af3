//! Connecting to the hub with the device's certificate (`mqtt.connect` at first,
//! `mqtt.reconnect` afterwards), with retries.

use super::backends::{Backends, DeviceTransport, Issued, Session};
use super::core::{Device, Stop};
use crate::crypto::DeviceKey;
use crate::metrics::Phase;

impl<B: Backends> Device<'_, B> {
    /// A session presenting `issued`, proving possession of `key`; the try is timed as `phase`.
    pub(super) async fn connect(
        &mut self,
        phase: Phase,
        key: &DeviceKey,
        issued: &Issued,
    ) -> Result<Session<B>, Stop> {
        let transport = &self.services.transport;
        let id = self.spec.id.as_str();
        let session = self
            .attempt(phase, || transport.connect(id, issued.chain.clone(), key))
            .await?;
        self.report.connects += 1;
        Ok(session)
    }
}
