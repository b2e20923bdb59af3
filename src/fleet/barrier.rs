//! The start barrier of a distributed run (`fleetsim run --start-at <RFC 3339>`): every shard
//! waits for the same wall-clock instant and starts its arrival clock there, so their arrival
//! slots interleave as in one process.
//!
//! A shard that is ready only after the barrier (a pod scheduled late, a slow image pull) does
//! not move its clock: it starts from the barrier all the same, its devices whose slots have
//! passed start at once and count as late (`devices.late`, the `arrival.late` phase), and the
//! report says how late the shard itself was ([`crate::report::StartBarrier`]).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::shard::Shard;
use crate::report::StartBarrier;

/// The barrier as this process reached it.
pub(super) struct Reached {
    /// The barrier on this process's monotonic clock (in the past when it came late).
    pub instant: Instant,
    /// What the report says about it.
    pub report: StartBarrier,
}

/// Waits until `at` (or returns at once when it has passed); `None` when `shutdown` completes
/// first.
pub(super) async fn wait(
    at: SystemTime,
    shard: Shard,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<Reached> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let (instant, late) = match at.duration_since(wall) {
        Ok(ahead) => (now + ahead, Duration::ZERO),
        Err(past) => {
            let late = past.duration();
            (now.checked_sub(late).unwrap_or(now), late)
        }
    };
    let report = StartBarrier {
        at: rfc3339(at),
        late_seconds: late.as_secs_f64(),
        late_shards: match late.is_zero() {
            true => Vec::new(),
            false => vec![shard.to_string()],
        },
    };
    if late.is_zero() {
        eprintln!(
            "fleetsim: waiting for the start barrier {} ({:.1} s)",
            report.at,
            instant.saturating_duration_since(now).as_secs_f64()
        );
    } else {
        eprintln!(
            "fleetsim: warning: ready {:.3} s after the start barrier {}: starting from it, \
             devices whose slots have passed start late",
            report.late_seconds, report.at
        );
    }
    tokio::select! {
        _ = tokio::time::sleep_until(instant) => Some(Reached { instant, report }),
        _ = shutdown => None,
    }
}

/// Why the run cannot start when this process reached the barrier only after the run's `left`
/// time had passed: it would run nothing and report a fleet that never came.
pub(super) fn missed(reached: &Reached, left: Duration) -> Option<String> {
    (reached.report.late_seconds >= left.as_secs_f64()).then(|| {
        format!(
            "ready {:.1} s after the start barrier {}, when this run ({:.1} s) was already over",
            reached.report.late_seconds,
            reached.report.at,
            left.as_secs_f64()
        )
    })
}

/// `at` as RFC 3339 (UTC).
pub(super) fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_early_process_waits_and_a_late_one_says_how_late() {
        let shard = Shard { index: 1, count: 2 };
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        let at = SystemTime::now() + Duration::from_millis(300);
        let reached = wait(at, shard, never.as_mut()).await.unwrap();
        assert!(Instant::now() >= reached.instant);
        assert_eq!(reached.report.late_seconds, 0.0);
        assert!(reached.report.late_shards.is_empty());

        let at = SystemTime::now() - Duration::from_secs(2);
        let begun = Instant::now();
        let reached = wait(at, shard, never.as_mut()).await.unwrap();
        assert!(begun.elapsed() < Duration::from_millis(500), "no wait");
        assert!(reached.report.late_seconds >= 2.0, "{:?}", reached.report);
        assert_eq!(reached.report.late_shards, vec!["1/2".to_string()]);
        assert!(Instant::now() - reached.instant >= Duration::from_secs(2));
    }

    #[tokio::test]
    async fn shutdown_while_waiting_starts_nothing() {
        let done = std::future::ready(());
        tokio::pin!(done);
        let at = SystemTime::now() + Duration::from_secs(3600);
        assert!(wait(at, Shard::WHOLE, done.as_mut()).await.is_none());
    }
}
