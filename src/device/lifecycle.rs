//! The life of one device, as its steps in order:
//!
//! 1. [`obtain_certificate`](super::enrol): keygen → csr → ca.register_domain → ca.issue (or
//!    the certificate a resumed soak's state holds);
//! 2. [`register`](super::register): hub.register, unless the fleet registered in bulk; or, in
//!    a run with a provisioning service, [`provision`](super::provision): dps.register, which
//!    creates the identity in the hub DPS chooses and tells the device which;
//! 3. [`connect`](super::connect): mqtt.connect (to the assigned hub, provisioning again if it
//!    refuses the device);
//! 4. [`operate`](super::online): telemetry, renewals and swaps ([`super::renewal`]),
//!    revocation when the fleet says so ([`super::revocation`]), reconnects, until the run
//!    stops.
//!
//! Every step is timed; failures are counted, retried with jittered backoff when retrying can
//! help, and never panic.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backends::Backends;
use super::core::{Device, DeviceReport, DeviceSpec, Services, Stop};
use crate::metrics::{DeviceState, Phase};

/// Runs one device until `stop` is cancelled or it fails for good. `intended_start` is when the
/// scheduler meant it to arrive: enrolment latency counts from there.
pub async fn run_device<B: Backends>(
    spec: DeviceSpec,
    services: Arc<Services<B>>,
    intended_start: Instant,
    stop: CancellationToken,
) -> DeviceReport {
    let mut device = Device::new(&spec, &services, &stop);
    // A panic anywhere in the device's life is caught here, at the task's boundary, so it is
    // counted (in the phase the device was in) and fails the run instead of vanishing.
    let lived = AssertUnwindSafe(device.live(intended_start))
        .catch_unwind()
        .await;
    match lived {
        // A revoked device stays counted as revoked.
        Ok(Ok(()) | Err(Stop::Stopped)) if device.is_revoked() => {}
        Ok(Ok(()) | Err(Stop::Stopped)) => device.set_state(DeviceState::Done),
        Ok(Err(Stop::Failed(phase, e))) => {
            tracing::debug!(device = %spec.id, phase = phase.name(), error = %e, "device failed");
            device.report.failure = Some(format!("{}: {e}", phase.name()));
            device.set_state(DeviceState::Failed);
        }
        Err(payload) => {
            let phase = phase_in(device.state());
            let message = crate::inject::panic_message(payload.as_ref());
            tracing::error!(device = %spec.id, phase = phase.name(), %message, "device task panicked");
            services.recorder.error(phase, "panic");
            device.report.failure = Some(format!("{}: panic: {message}", phase.name()));
            device.report.panicked_in = Some(phase);
            device.set_state(DeviceState::Failed);
        }
    }
    device.report
}

/// The phase a device in `state` is in, to name where a panic happened.
fn phase_in(state: DeviceState) -> Phase {
    match state {
        DeviceState::Pending | DeviceState::Enrolling => Phase::CaIssue,
        DeviceState::Connecting => Phase::MqttConnect,
        DeviceState::Renewing => Phase::CaRenew,
        DeviceState::Backoff => Phase::MqttReconnect,
        DeviceState::Revoked => Phase::RevokeCutoff,
        DeviceState::Online | DeviceState::Failed | DeviceState::Done => Phase::MqttPublish,
    }
}

impl<B: Backends> Device<'_, B> {
    /// The device's whole life. Its future is the device task's state for as long as the device
    /// lives, and an async fn's state is as large as its largest await: so the one-off steps
    /// (enrolment, registration, connects, and within `operate` renewals, swaps, revocation and
    /// reconnects) are boxed and their state is freed when they end, instead of being carried
    /// inline by every idle device (≈ 14 KiB per device; BENCHMARKS.md, "Memory per device").
    ///
    /// With a provisioning service (DPS), provisioning takes `register`'s place, between the
    /// certificate and the connect: the device learns its hub and is registered there.
    async fn live(&mut self, intended_start: Instant) -> Result<(), Stop> {
        crate::inject::panic_at("device");
        if let Some(policy) = self.spec.renewal.sas {
            return self.live_sas(policy, intended_start).await;
        }
        let (key, issued) = Box::pin(self.obtain_certificate()).await?;
        self.report.enrolled = true;
        match self.services.provisioning.is_some() {
            true => Box::pin(self.provision(&key, &issued)).await?,
            false => Box::pin(self.register()).await?,
        }
        let x509 = crate::metrics::auth_gauge::AuthType::X509;
        self.services.recorder.identity(None, x509);

        self.set_state(DeviceState::Connecting);
        // Enrolled and registered: the next device may take this one's place (closed model).
        self.services.gate.enrolment_done(self.spec.index);
        let session = Box::pin(self.connect(Phase::MqttConnect, &key, &issued)).await?;
        self.report.connected = true;
        self.set_state(DeviceState::Online);
        self.operate(session, key, issued, intended_start).await
    }
}
