//! The run's clock: when it starts (now, or at a distributed run's start barrier), where a
//! resumed soak's earlier lives left it, and when it ends.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::barrier;
use super::error::FleetError;
use super::shard::Shard;

/// When the run is: its start (earlier than now when a soak resumes) and its end.
pub(super) struct Timing {
    /// When this process's part began: devices a resumed soak brings back count from here.
    pub(super) begun: Instant,
    pub(super) start: Instant,
    pub(super) end: Instant,
    /// When this part began, as wall-clock time (RFC 3339), for the report.
    pub(super) started_at: String,
    /// The start barrier and how late this process reached it (`--start-at`).
    pub(super) barrier: Option<crate::report::StartBarrier>,
}

impl Timing {
    /// When the run starts and ends: now, or at the distributed run's barrier (`start_at`), which
    /// this shard waits for. A run resumed from `--state` has only what its earlier lives
    /// (`elapsed_before`) left of `duration`. Stopped while waiting, no device starts: `stop` is cancelled and the report
    /// says the run was interrupted.
    pub(super) async fn decide(
        (start_at, shard): (Option<SystemTime>, Shard),
        (elapsed_before, duration): (Duration, Duration),
        stop: &CancellationToken,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Self, FleetError> {
        let Some(at) = start_at else {
            return Ok(Self::new(elapsed_before, duration));
        };
        match barrier::wait(at, shard, shutdown).await {
            Some(reached) => {
                let left = duration.saturating_sub(elapsed_before);
                if let Some(missed) = barrier::missed(&reached, left) {
                    return Err(FleetError::Setup(missed));
                }
                Ok(Self::at_barrier(reached, elapsed_before, duration))
            }
            None => {
                stop.cancel();
                Ok(Self::new(elapsed_before, duration))
            }
        }
    }

    /// Starts the clock of a run `elapsed_before` of which earlier parts of a resumed soak ran:
    /// it continues its duration and arrival slots where the last part stopped.
    pub(super) fn new(elapsed_before: Duration, duration: Duration) -> Self {
        let started_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let begun = Instant::now();
        let start = begun.checked_sub(elapsed_before).unwrap_or(begun);
        Self {
            begun,
            start,
            end: start + duration,
            started_at,
            barrier: None,
        }
    }

    /// Starts the clock at a start barrier this process `reached` (now, or earlier when it
    /// came late): arrival slots and the end count from the barrier, whenever this began.
    fn at_barrier(reached: barrier::Reached, elapsed_before: Duration, duration: Duration) -> Self {
        let start = reached
            .instant
            .checked_sub(elapsed_before)
            .unwrap_or(reached.instant);
        Self {
            begun: Instant::now(),
            start,
            end: start + duration,
            started_at: reached.report.at.clone(),
            barrier: Some(reached.report),
        }
    }
}
