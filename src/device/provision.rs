//! Provisioning (`dps.register`): a device holding its certificate registers with the run's
//! provisioning service (DPS), which admits it by that certificate, creates its identity in the
//! hub it chooses and says which hub that is. It takes the place of `register` in the life of a
//! device of a DPS run, and runs again when the assigned hub refuses the device (`connect`).
//!
//! Each registration is one timed try (connect to DPS, register, poll until assigned); the
//! client waits as DPS's `retry-after` says, in real time even when the scenario compresses
//! days (see the README: the compression is for certificate lifetimes; DPS's waits and throttles
//! run on the real clock, in Azure and in the emulator). Throttled and transient failures are
//! tried again with backoff; a refusal (a disabled enrolment, an untrusted certificate) ends the
//! device's life.

use std::sync::atomic::{AtomicU32, Ordering};

use super::backends::{
    Backends, FailureClass, Issued, Placement, ProvisioningService, ServiceError,
};
use super::core::{Device, Stop};
use crate::crypto::DeviceKey;
use crate::metrics::Phase;

impl<B: Backends> Device<'_, B> {
    /// Registers the device with the provisioning service, presenting `issued` and proving
    /// possession of `key`, and keeps the hub it was placed in for its connects.
    pub(super) async fn provision(&mut self, key: &DeviceKey, issued: &Issued) -> Result<(), Stop> {
        let Some(service) = &self.services.provisioning else {
            return Ok(());
        };
        let (polls, throttled) = (AtomicU32::new(0), AtomicU32::new(0));
        let id = self.spec.id.as_str();
        let tried = self
            .attempt(Phase::DpsRegister, || {
                let (polls, throttled) = (&polls, &throttled);
                async move {
                    let p = service.provision(id, issued.chain.clone(), key).await;
                    polls.fetch_add(p.polls, Ordering::Relaxed);
                    throttled.fetch_add(p.throttled, Ordering::Relaxed);
                    p.result.and_then(|placed| same_device(id, placed))
                }
            })
            .await;
        let throttled = throttled.into_inner();
        self.report.provisioning_polls += u64::from(polls.into_inner());
        self.report.provisioning_throttled += u64::from(throttled);
        for _ in 0..throttled {
            self.services
                .recorder
                .retry("dps", "iotdps-register", "throttled");
        }
        let placement = tried?;
        self.report.provisioned += 1;
        self.report.assigned_hub = Some(placement.hub);
        Ok(())
    }
}

/// The placement, if it is of this device: the hub checks that the certificate's CN is the
/// device id, so a placement under another id could never connect.
fn same_device(id: &str, placed: Placement) -> Result<Placement, ServiceError> {
    if placed.device_id == id {
        return Ok(placed);
    }
    Err(ServiceError {
        kind: "device_id".into(),
        class: FailureClass::Rejected,
        message: format!(
            "the provisioning service placed device {:?} for certificate {id:?}",
            placed.device_id
        ),
        retry_after: None,
    })
}
