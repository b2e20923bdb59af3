//! The device's hub identity: created as the device arrives (`hub.register`), unless the fleet
//! registered the whole fleet in bulk before, or a resumed soak's state says it exists.
//!
//! A provisioning service (DPS) is the sibling step, `provision`: the device, holding its
//! certificate, asks DPS which hub it belongs to and is registered there, instead of here.

use super::backends::{Backends, DeviceRegistry};
use super::core::{Device, Stop};
use crate::metrics::Phase;

impl<B: Backends> Device<'_, B> {
    /// Creates the device's identity in the hub's registry, if it is this device's to create.
    pub(super) async fn register(&mut self) -> Result<(), Stop> {
        let registered = self.spec.resume.as_ref().is_some_and(|r| r.registered);
        if !self.spec.register || registered {
            return Ok(());
        }
        let Some(registry) = &self.services.registry else {
            return Ok(());
        };
        let id = self.spec.id.as_str();
        self.attempt(Phase::HubRegister, || registry.register(id))
            .await?;
        self.journal_registered().await
    }
}
