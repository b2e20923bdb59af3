//! fleetsim as the fleet's backend (`backend.consume`): an [`EventHubConsumer`] on the hub's
//! built-in endpoint, connected before the first device starts (every partition from
//! `@latest`), reading until the run ends. Each fleetsim telemetry message it reads (device id
//! from `iothub-connection-device-id`, sequence and send time from fleetsim's application
//! properties) is noted in the run's [`DeliveryLedger`] and, the first time, timed as
//! `d2c.delivery` (the device's send → now, by the two wall clocks, in milliseconds). A lost
//! connection is opened again from the last enqueued time it saw, so nothing is skipped (a
//! re-read is counted as a duplicate, as a real backend would see it).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::FleetError;
use crate::iothub::amqp::{
    Endpoint, EventHubConnectionString, EventHubConsumer, ReceivedEvent, StartPosition, now_ms,
};
use crate::iothub::{SENT_AT_PROPERTY, SEQUENCE_PROPERTY};
use crate::metrics::delivery::DeliveryLedger;
use crate::metrics::{Outcome, Phase, Recorder};
use crate::report::backend::BackendReport;

/// Where the backend reads.
#[derive(Clone)]
pub struct BackendTarget {
    pub endpoint: Endpoint,
    pub credentials: EventHubConnectionString,
    pub consumer_group: String,
}

pub struct Backend {
    task: JoinHandle<u64>,
    stop: CancellationToken,
    ledger: Arc<DeliveryLedger>,
    consumer_group: String,
    partitions: usize,
}

/// Pause before connecting again after the connection failed.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

impl Backend {
    /// Connects (so reading starts before any device sends) and reads in the background.
    pub async fn start(target: BackendTarget, recorder: Arc<Recorder>) -> Result<Self, FleetError> {
        let consumer = EventHubConsumer::connect(
            &target.endpoint,
            &target.credentials,
            &target.consumer_group,
            &StartPosition::Latest,
        )
        .await
        .map_err(|e| FleetError::Setup(format!("backend: {e}")))?;
        let partitions = consumer.partition_ids().len();
        let ledger = recorder.track_deliveries();
        let stop = CancellationToken::new();
        let task = tokio::spawn(read(
            consumer,
            target.clone(),
            recorder,
            ledger.clone(),
            stop.clone(),
        ));
        Ok(Self {
            task,
            stop,
            ledger,
            consumer_group: target.consumer_group,
            partitions,
        })
    }

    /// Once the devices have stopped: reads on until nothing acknowledged is missing or `grace`
    /// has passed, then stops and reports.
    pub async fn finish(self, grace: Duration) -> BackendReport {
        let deadline = Instant::now() + grace;
        while self.ledger.totals().lost > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.cancel();
        let reconnects = self.task.await.unwrap_or_default();
        BackendReport {
            consumer_group: self.consumer_group,
            partitions: self.partitions as u64,
            reconnects,
            totals: self.ledger.totals(),
        }
    }
}

/// Reads until `stop`; returns how often it connected again.
async fn read(
    mut consumer: EventHubConsumer,
    target: BackendTarget,
    recorder: Arc<Recorder>,
    ledger: Arc<DeliveryLedger>,
    stop: CancellationToken,
) -> u64 {
    let mut reconnects = 0;
    let mut last_enqueued: Option<i64> = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = consumer.next(Instant::now() + Duration::from_secs(1)) => n,
        };
        match next {
            Ok(Some(event)) => {
                last_enqueued = event.enqueued_ms.or(last_enqueued);
                note(&event, &recorder, &ledger);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "backend: the Event Hub connection failed; connecting again");
                recorder.error(Phase::D2cDelivery, &e.kind());
                let start = match last_enqueued {
                    // Inclusive of the last time seen: nothing is skipped, a re-read counts as a
                    // duplicate.
                    Some(ms) => StartPosition::EnqueuedAfter(ms - 1),
                    None => StartPosition::Latest,
                };
                let Some(c) = reconnect(&target, &start, &stop).await else {
                    break;
                };
                consumer = c;
                reconnects += 1;
            }
        }
    }
    consumer.close().await;
    reconnects
}

async fn reconnect(
    target: &BackendTarget,
    start: &StartPosition,
    stop: &CancellationToken,
) -> Option<EventHubConsumer> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(RECONNECT_WAIT) => {}
        }
        let connect = EventHubConsumer::connect(
            &target.endpoint,
            &target.credentials,
            &target.consumer_group,
            start,
        );
        match connect.await {
            Ok(c) => return Some(c),
            Err(e) => tracing::warn!(error = %e, "backend: connecting again failed"),
        }
    }
}

/// Notes one event in the ledger and times its delivery the first time it is read.
fn note(event: &ReceivedEvent, recorder: &Recorder, ledger: &DeliveryLedger) {
    let seq = event
        .property(SEQUENCE_PROPERTY)
        .and_then(|s| s.parse::<u64>().ok());
    let (Some(device), Some(seq)) = (event.device_id.as_deref(), seq) else {
        ledger.foreign();
        return;
    };
    if !ledger.received(device, seq) {
        return;
    }
    let Some(sent) = event
        .property(SENT_AT_PROPERTY)
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return;
    };
    let took = Duration::from_millis(u64::try_from(now_ms() - sent).unwrap_or(0));
    let end = Instant::now();
    let start = end.checked_sub(took).unwrap_or(end);
    recorder.record(Phase::D2cDelivery, Outcome::Ok, start, end);
}
