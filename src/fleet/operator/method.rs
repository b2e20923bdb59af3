//! A `method` event: the direct method invoked on each chosen device, paced by the event's
//! rate and the fleet's `methods` limit, at most [`MAX_IN_FLIGHT`] at once, each timed as
//! `method.invoke` from when it was due to the device's answer (or the hub's refusal: offline,
//! timeout, throttled after retries), and counted for the report by final outcome and by the
//! status the device answered with, and the event's span (first due → last answer).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::{Context, MAX_IN_FLIGHT, MAX_TRIES, Targets};
use crate::device::gate::TrafficClass;
use crate::iothub::service::{CallError, MethodCall};
use crate::metrics::{Outcome, Phase};
use crate::scenario::events::MethodEvent;
use crate::sync::lock;

/// Invokes `event` on the devices of `targets`; its counts go to the report's method `slot`.
pub async fn run(ctx: Arc<Context>, event: MethodEvent, targets: Targets, slot: usize) {
    let Some(ids) = ctx.resolve(targets).await else {
        return;
    };
    lock(&ctx.report).methods[slot].devices = ids.len() as u64;
    let call = Arc::new(MethodCall {
        method_name: event.name.clone(),
        payload: event.payload.clone(),
        response_timeout_in_seconds: whole_seconds(event.response_timeout.0),
        connect_timeout_in_seconds: event.connect_timeout.map_or(0, |c| whole_seconds(c.0)),
    });
    let start = Instant::now();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut calls = JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let slot_at = ctx.slot(start, event.rate.map(|r| r.0), i);
        let Some(intended) = ctx.wait_turn(slot_at, Some(TrafficClass::Method)).await else {
            break;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (ctx, call) = (ctx.clone(), call.clone());
        calls.spawn(async move {
            invoke(&ctx, &id, &call, intended, slot).await;
            drop(permit);
        });
    }
    while calls.join_next().await.is_some() {}
    lock(&ctx.report).methods[slot].seconds = start.elapsed().as_secs_f64();
}

/// IoT Hub takes whole seconds: a span is rounded up.
fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

async fn invoke(ctx: &Context, id: &str, call: &MethodCall, intended: Instant, slot: usize) {
    let attempted = ctx
        .call(
            Phase::MethodInvoke,
            intended,
            Some(TrafficClass::Method),
            MAX_TRIES,
            || ctx.client.invoke_method(id, call),
        )
        .await;
    let Some(attempted) = attempted else {
        return;
    };
    if attempted.result.is_ok() {
        ctx.recorder()
            .record(Phase::MethodInvoke, Outcome::Ok, intended, Instant::now());
    }
    let mut report = lock(&ctx.report);
    let counts = &mut report.methods[slot];
    counts.throttled_calls += attempted.throttled;
    match attempted.result {
        Ok(answer) => {
            counts.ok += 1;
            *counts
                .statuses
                .entry(answer.status.to_string())
                .or_insert(0) += 1;
        }
        Err(CallError::Offline) => counts.offline += 1,
        Err(CallError::DeviceTimeout | CallError::NoAnswer) => counts.timeout += 1,
        Err(CallError::Throttled { .. }) => counts.throttled += 1,
        Err(_) => counts.error += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds(Duration::from_millis(5500)), 6);
    }
}
