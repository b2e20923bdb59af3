//! The plain progress line: one line to stderr every few seconds, for logs and pipes (CI, `| tee`,
//! `--no-tui`).

use std::time::Duration;

use crate::metrics::{DeviceState, Snapshot};

/// How often a progress line is printed.
pub const EVERY: Duration = Duration::from_secs(5);

/// One progress line: elapsed time, devices per state (revoked ones only once there are some),
/// messages, the operator's direct methods by outcome (once there are some), errors.
pub fn progress_line(snapshot: &Snapshot, elapsed: Duration, planned: u64) -> String {
    let operator =
        super::view::operator_summary(snapshot).map_or(String::new(), |o| format!(" | {o}"));
    let state = |st: DeviceState| snapshot.devices.get(st.name()).copied().unwrap_or(0);
    let revoked = match state(DeviceState::Revoked) {
        0 => String::new(),
        n => format!(", {n} revoked"),
    };
    format!(
        "[{:>6.1}s] devices {}/{} started: {} enrolling, {} connecting, {} online, {} renewing, {} backoff, {} failed{} | msgs {} sent {} acked, {} in {} meters{operator} | errors {}",
        elapsed.as_secs_f64(),
        snapshot.devices.values().sum::<i64>(),
        planned,
        state(DeviceState::Enrolling),
        state(DeviceState::Connecting),
        state(DeviceState::Online),
        state(DeviceState::Renewing),
        state(DeviceState::Backoff),
        state(DeviceState::Failed),
        revoked,
        snapshot.messages_sent,
        snapshot.messages_acked,
        crate::metrics::human_bytes(snapshot.bytes_sent),
        snapshot.meters_sent,
        snapshot.total_errors(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Outcome, Phase, Recorder};

    #[test]
    fn the_line_counts_states_messages_and_errors() {
        let recorder = Recorder::new();
        for _ in 0..3 {
            recorder.transition(None, DeviceState::Pending);
        }
        recorder.transition(Some(DeviceState::Pending), DeviceState::Online);
        recorder.transition(Some(DeviceState::Pending), DeviceState::Enrolling);
        recorder.message_sent();
        recorder.message_sent();
        recorder.message_bytes(2048, 2);
        recorder.message_acked();
        recorder.error(Phase::CaIssue, "http_503");
        let line = progress_line(&recorder.snapshot(), Duration::from_millis(12_340), 10);
        assert_eq!(
            line,
            "[  12.3s] devices 3/10 started: 1 enrolling, 0 connecting, 1 online, 0 renewing, 0 backoff, 0 failed | msgs 2 sent 1 acked, 2.0 KiB in 2 meters | errors 1"
        );
        recorder.transition(Some(DeviceState::Online), DeviceState::Revoked);
        let line = progress_line(&recorder.snapshot(), Duration::from_secs(13), 10);
        assert!(
            line.contains(", 0 online, 0 renewing, 0 backoff, 0 failed, 1 revoked | msgs"),
            "{line}"
        );
        // Once the operator invokes methods, their outcomes join the line.
        let now = std::time::Instant::now();
        for outcome in [Outcome::Ok, Outcome::Ok, Outcome::Offline] {
            recorder.record(Phase::MethodInvoke, outcome, now, now);
        }
        let line = progress_line(&recorder.snapshot(), Duration::from_secs(14), 10);
        assert!(
            line.contains("2 meters | methods 2 ok, 1 offline | errors 1"),
            "{line}"
        );
    }
}
