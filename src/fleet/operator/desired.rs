//! A `desired` event: the patch sent to each chosen device (paced by the event's rate and the
//! fleet's `twin_updates` limit), then the device's twin read every `poll` (through the fleet's
//! `twin_reads` limit) until the device has acknowledged every property the patch sets, the IoT
//! Plug and Play way (`{"value", "ac": 2xx, "av" >= the desired $version the patch made}`), or
//! `ack_timeout` has passed. Timed as `twin.desired`: from when the patch was due to the read
//! that saw the acknowledgement, as an operator sees it (so within a poll of the device's own
//! time).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::{Context, MAX_IN_FLIGHT, MAX_TRIES, Targets};
use crate::device::gate::TrafficClass;
use crate::iothub::service::{CallError, Twin};
use crate::metrics::{Outcome, Phase};
use crate::scenario::events::DesiredEvent;
use crate::sync::lock;

/// What one device's patch waits for.
struct Wanted {
    patch: Value,
    /// The properties the patch sets (deleted ones are not acknowledged).
    set: Map<String, Value>,
    poll: Duration,
    ack_timeout: Duration,
}

/// Sends `event`'s patch to the devices of `targets`; counts go to the report's desired `slot`.
pub async fn run(ctx: Arc<Context>, event: DesiredEvent, targets: Targets, slot: usize) {
    let Some(ids) = ctx.resolve(targets).await else {
        return;
    };
    lock(&ctx.report).desired[slot].devices = ids.len() as u64;
    let wanted = Arc::new(Wanted {
        patch: Value::Object(event.patch.clone()),
        set: event
            .patch
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        poll: event.poll.0,
        ack_timeout: event.ack_timeout.0,
    });
    let start = Instant::now();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut patches = JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let slot_at = ctx.slot(start, event.rate.map(|r| r.0), i);
        let class = Some(TrafficClass::TwinUpdate);
        let Some(intended) = ctx.wait_turn(slot_at, class).await else {
            return;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (ctx, wanted) = (ctx.clone(), wanted.clone());
        patches.spawn(async move {
            patch(&ctx, &id, &wanted, intended, slot).await;
            drop(permit);
        });
    }
    while patches.join_next().await.is_some() {}
}

/// Patches one device and waits for its acknowledgement.
async fn patch(ctx: &Context, id: &str, wanted: &Wanted, intended: Instant, slot: usize) {
    let class = Some(TrafficClass::TwinUpdate);
    let attempted = ctx
        .call(Phase::TwinDesired, intended, class, MAX_TRIES, || {
            ctx.client.patch_desired(id, &wanted.patch, None)
        })
        .await;
    let Some(attempted) = attempted else {
        return;
    };
    lock(&ctx.report).desired[slot].throttled_calls += attempted.throttled;
    let twin = match attempted.result {
        Ok(twin) => twin,
        Err(_) => {
            lock(&ctx.report).desired[slot].failed += 1;
            return;
        }
    };
    if wanted.set.is_empty() {
        ctx.recorder()
            .record(Phase::TwinDesired, Outcome::Ok, intended, Instant::now());
        lock(&ctx.report).desired[slot].acknowledged += 1;
        return;
    }
    let version = twin.desired_version();
    let deadline = Instant::now() + wanted.ack_timeout;
    match wait_for_ack(ctx, id, wanted, version, deadline, slot).await {
        Some(true) => {
            ctx.recorder()
                .record(Phase::TwinDesired, Outcome::Ok, intended, Instant::now());
            lock(&ctx.report).desired[slot].acknowledged += 1;
        }
        Some(false) => {
            let recorder = ctx.recorder();
            recorder.record(
                Phase::TwinDesired,
                Outcome::Timeout,
                intended,
                Instant::now(),
            );
            recorder.error(Phase::TwinDesired, "not_acknowledged");
            lock(&ctx.report).desired[slot].not_acknowledged += 1;
        }
        None => {}
    }
}

/// Reads the twin every poll until it acknowledges the patch (`true`) or `deadline` passes
/// (`false`); `None` if the run stopped.
async fn wait_for_ack(
    ctx: &Context,
    id: &str,
    wanted: &Wanted,
    version: Option<u64>,
    deadline: Instant,
    slot: usize,
) -> Option<bool> {
    let mut next = Instant::now() + wanted.poll;
    loop {
        if next > deadline {
            return Some(false);
        }
        ctx.wait_turn(next, Some(TrafficClass::TwinRead)).await?;
        let read = tokio::select! {
            _ = ctx.stop.cancelled() => return None,
            r = ctx.client.get_twin(id) => r,
        };
        lock(&ctx.report).desired[slot].reads += 1;
        next = Instant::now() + wanted.poll;
        match read {
            Ok(twin) if acknowledged(&twin, &wanted.set, version) => return Some(true),
            Ok(_) => {}
            Err(e) => {
                ctx.recorder()
                    .error(Phase::TwinDesired, &format!("read_{}", e.kind()));
                if let CallError::Throttled { retry_after, .. } = e {
                    lock(&ctx.report).desired[slot].reads_throttled += 1;
                    next = next.max(Instant::now() + retry_after.unwrap_or_default());
                }
            }
        }
    }
}

/// Whether `twin` acknowledges every property of `set`: at `version` or later when the hub said
/// which version the patch made, else with the value patched.
fn acknowledged(twin: &Twin, set: &Map<String, Value>, version: Option<u64>) -> bool {
    set.iter().all(|(name, value)| match version {
        Some(v) => twin.acknowledged(name, v),
        None => {
            twin.acknowledged(name, 0)
                && twin
                    .properties
                    .reported
                    .get(name)
                    .and_then(|a| a.get("value"))
                    == Some(value)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_acknowledgement_must_cover_the_patch() {
        let twin: Twin = serde_json::from_value(json!({
            "deviceId": "d",
            "properties": {
                "desired": {"$version": 4},
                "reported": {"telemetryInterval": {"value": 5, "ac": 200, "av": 4}}
            }
        }))
        .unwrap();
        let set: Map<String, Value> =
            serde_json::from_value(json!({"telemetryInterval": 5})).unwrap();
        assert!(acknowledged(&twin, &set, Some(4)));
        assert!(!acknowledged(&twin, &set, Some(5)));
        assert!(acknowledged(&twin, &set, None));
        let other: Map<String, Value> =
            serde_json::from_value(json!({"telemetryInterval": 6})).unwrap();
        assert!(!acknowledged(&twin, &other, None));
        let more: Map<String, Value> =
            serde_json::from_value(json!({"telemetryInterval": 5, "logLevel": "debug"})).unwrap();
        assert!(!acknowledged(&twin, &more, Some(4)));
    }
}
