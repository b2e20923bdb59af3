//! A `query` event: the query run at the event's time and then every `every` until the run
//! ends, each run timed as `registry.query` (all pages) from when it was due, so a run that
//! starts late behind a slow one shows up as latency; what it returned (a `COUNT()`'s number,
//! else the rows) is kept for the report. A throttled run is not retried: the next is due
//! anyway.

use std::sync::Arc;

use tokio::time::Instant;

use super::context::Context;
use crate::iothub::service::CallError;
use crate::metrics::{Outcome, Phase};
use crate::scenario::events::QueryEvent;
use crate::sync::lock;

/// Runs `event` until the run stops; counts go to the report's query `slot`.
pub async fn run(ctx: Arc<Context>, event: QueryEvent, slot: usize) {
    let start = Instant::now();
    let page_size = event.page_size.map(|n| n.get());
    for k in 0u32.. {
        let intended = match event.every {
            Some(every) => start + every.0 * k,
            None if k == 0 => start,
            None => return,
        };
        if ctx.wait_turn(intended, None).await.is_none() {
            return;
        }
        let attempted = ctx
            .call(Phase::RegistryQuery, intended, None, 1, || {
                ctx.client.query_all(&event.text, page_size)
            })
            .await;
        let Some(attempted) = attempted else {
            return;
        };
        let mut report = lock(&ctx.report);
        let counts = &mut report.queries[slot];
        counts.runs += 1;
        match attempted.result {
            Ok(result) => {
                ctx.recorder()
                    .record(Phase::RegistryQuery, Outcome::Ok, intended, Instant::now());
                counts.ok += 1;
                counts.returned(result.count().unwrap_or(result.items.len() as u64));
            }
            Err(e) => {
                counts.failed += 1;
                counts.throttled += u64::from(matches!(e, CallError::Throttled { .. }));
            }
        }
    }
}
