//! Bulk registration: create the whole fleet's hub identities in calls of up to 100 before the
//! first device arrives. Each call is one registry operation, timed as `hub.register`; throttled
//! calls wait for `Retry-After` (or back off) and try again.

use std::time::Duration;

use rand::SeedableRng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::FleetError;
use super::target::FleetServices;
use crate::device::ServiceError;
use crate::iothub::identity::BULK_MAX;
use crate::metrics::{Outcome, Phase};

/// Registers `ids`; per-device failures other than "already exists" are counted as errors.
pub async fn register_all(
    services: &FleetServices,
    ids: &[String],
    stop: &CancellationToken,
) -> Result<(), FleetError> {
    let Some(registry) = &services.registry else {
        return Err(FleetError::Setup(
            "bulk registration needs the hub's registry".into(),
        ));
    };
    let registry = &registry.0;
    let recorder = &services.recorder;
    let mut rng = rand::rngs::StdRng::seed_from_u64(ids.len() as u64);
    for chunk in ids.chunks(BULK_MAX) {
        let mut tries = 0;
        loop {
            let start = Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = registry.bulk_create(chunk) => r,
            };
            match result {
                Ok(outcome) => {
                    recorder.record(Phase::HubRegister, Outcome::Ok, start, Instant::now());
                    for e in outcome
                        .errors
                        .iter()
                        .filter(|e| e.error_code != "DeviceAlreadyExists")
                    {
                        recorder.error(Phase::HubRegister, &format!("bulk_{}", e.error_code));
                    }
                    break;
                }
                Err(e) => {
                    let e = ServiceError::from(e);
                    recorder.record(Phase::HubRegister, e.outcome(), start, Instant::now());
                    recorder.error(Phase::HubRegister, &e.kind);
                    tries += 1;
                    if !e.retryable() || tries >= services.backoff.max_attempts {
                        return Err(FleetError::Setup(format!("bulk registration failed: {e}")));
                    }
                    let wait = services
                        .backoff
                        .delay(tries, &mut rng)
                        .max(e.retry_after.unwrap_or(Duration::ZERO));
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
    Ok(())
}
