//! A `c2d` event: one cloud-to-device message to each chosen device, sent through the hub's
//! AMQP endpoint by one [`C2dSender`] per event, paced by the event's rate and the fleet's
//! `c2d` limit, each timed as `c2d.send` from when it was due to the hub's disposition and
//! counted for the report by outcome:
//! - `ok`: accepted for a device that was connected when the event fired;
//! - `offline_queued`: accepted for a device that was not: it waits in the device's queue. Who
//!   is connected is asked of the hub once, when the event fires (`SELECT * FROM devices WHERE
//!   connectionState = 'Connected'`, timed as `registry.query`), so the figure is the hub's
//!   own view at that moment, for the embedded hub and Azure alike;
//! - `queue_full`, `throttled`, `rejected` (too large, unknown device, anything else): the
//!   hub's refusals;
//! - `expired`: its turn came after its expiry, so it was not sent;
//! - `error`: the connection failed (the sender connects again for the next message).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::context::{Context, Targets};
use crate::device::gate::TrafficClass;
use crate::fleet::target::C2dTarget;
use crate::iothub::amqp::{C2dOutcome, C2dSend, C2dSender, now_ms};
use crate::metrics::{Outcome, Phase};
use crate::report::operator::C2dCounts;
use crate::scenario::events::C2dEvent;
use crate::sync::lock;

const CONNECTED: &str = "SELECT * FROM devices WHERE connectionState = 'Connected'";

/// Sends `event` to the devices of `targets`; counts go to the report's c2d `slot`.
pub async fn run(ctx: Arc<Context>, event: C2dEvent, targets: Targets, slot: usize) {
    let Some(ids) = ctx.resolve(targets).await else {
        return;
    };
    lock(&ctx.report).c2d[slot].devices = ids.len() as u64;
    let Some(target) = ctx.c2d.clone() else {
        tracing::warn!("a c2d event needs the hub's AMQP endpoint and a connection string");
        count(&ctx, slot, |c| c.error += ids.len() as u64);
        return;
    };
    let connected = connected(&ctx).await;
    let start = Instant::now();
    let mut sender: Option<C2dSender> = None;
    for (i, id) in ids.iter().enumerate() {
        let due = ctx.slot(start, event.rate.map(|r| r.0), i);
        let Some(intended) = ctx.wait_turn(due, Some(TrafficClass::C2d)).await else {
            break;
        };
        let expiry_ms = event.expiry.map(|e| {
            let waited = Instant::now().saturating_duration_since(due);
            now_ms() - waited.as_millis() as i64 + e.0.as_millis() as i64
        });
        if expiry_ms.is_some_and(|e| e <= now_ms()) {
            ctx.recorder()
                .record(Phase::C2dSend, Outcome::Expired, intended, Instant::now());
            count(&ctx, slot, |c| c.expired += 1);
            continue;
        }
        let msg = message(&event, id, i, expiry_ms);
        let online = connected.as_ref().is_none_or(|c| c.contains(id));
        let outcome = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            o = send(&target, &mut sender, &msg) => o,
        };
        record(&ctx, slot, intended, outcome, online);
    }
    if let Some(s) = sender {
        s.close().await;
    }
}

/// The message for the `i`th device of the event.
fn message(event: &C2dEvent, device: &str, i: usize, expiry_ms: Option<i64>) -> C2dSend {
    let message_id = format!("fleetsim-{}-{i}", uuid::Uuid::new_v4().simple());
    C2dSend {
        device_id: device.to_string(),
        body: event.body_for(device, &message_id),
        message_id: Some(message_id),
        correlation_id: None,
        content_type: event.content_type().map(str::to_string),
        content_encoding: event.content_type().map(|_| "utf-8".to_string()),
        expiry_ms,
        ack: event.ack.clone(),
        properties: event.property_pairs(),
    }
}

/// Sends on the open sender, connecting first if there is none; a failed connection is
/// dropped so the next message connects again.
async fn send(
    target: &C2dTarget,
    sender: &mut Option<C2dSender>,
    msg: &C2dSend,
) -> Result<C2dOutcome, String> {
    if sender.is_none() {
        match C2dSender::connect(&target.endpoint, &target.credentials).await {
            Ok(s) => *sender = Some(s),
            Err(e) => return Err(e.to_string()),
        }
    }
    let Some(s) = sender.as_mut() else {
        return Err("no connection".into());
    };
    match s.send(msg).await {
        Ok(o) => Ok(o),
        Err(e) => {
            *sender = None;
            Err(e.to_string())
        }
    }
}

fn record(
    ctx: &Context,
    slot: usize,
    intended: Instant,
    outcome: Result<C2dOutcome, String>,
    online: bool,
) {
    let metric = match &outcome {
        Ok(C2dOutcome::Accepted) if online => Outcome::Ok,
        Ok(C2dOutcome::Accepted) => Outcome::OfflineQueued,
        Ok(C2dOutcome::QueueFull) => Outcome::QueueFull,
        Ok(C2dOutcome::Throttled) => Outcome::Throttled,
        Ok(_) => Outcome::Rejected,
        Err(_) => Outcome::Error,
    };
    ctx.recorder()
        .record(Phase::C2dSend, metric, intended, Instant::now());
    if metric != Outcome::Ok && metric != Outcome::OfflineQueued {
        ctx.recorder().error(Phase::C2dSend, metric.name());
    }
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, "a C2D send failed");
    }
    count(ctx, slot, |c| match metric {
        Outcome::Ok => c.accepted += 1,
        Outcome::OfflineQueued => c.offline_queued += 1,
        Outcome::QueueFull => c.queue_full += 1,
        Outcome::Throttled => c.throttled += 1,
        Outcome::Rejected => c.rejected += 1,
        _ => c.error += 1,
    });
}

fn count(ctx: &Context, slot: usize, f: impl FnOnce(&mut C2dCounts)) {
    f(&mut lock(&ctx.report).c2d[slot]);
}

/// The devices connected now, as the hub sees them; `None` if the hub could not say (then
/// every accepted message counts as `ok`).
async fn connected(ctx: &Context) -> Option<HashSet<String>> {
    let started = Instant::now();
    let attempted = ctx
        .call(Phase::RegistryQuery, started, None, 1, || {
            ctx.client.query_all(CONNECTED, None)
        })
        .await?;
    match attempted.result {
        Ok(result) => {
            ctx.recorder()
                .record(Phase::RegistryQuery, Outcome::Ok, started, Instant::now());
            Some(result.device_ids().into_iter().collect())
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not ask the hub which devices are connected");
            None
        }
    }
}
