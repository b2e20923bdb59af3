use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::*;
use crate::metrics::Recorder;

/// The test backend's screen as text, one string per row.
fn screen(terminal: &Terminal<TestBackend>) -> Vec<String> {
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    buffer
        .content
        .chunks(width)
        .map(|row| row.iter().map(|cell| cell.symbol()).collect())
        .collect()
}

fn row_with<'a>(screen: &'a [String], needle: &str) -> &'a str {
    screen
        .iter()
        .find(|row| row.contains(needle))
        .unwrap_or_else(|| panic!("no row contains {needle:?}:\n{}", screen.join("\n")))
}

/// A recorder fed a known run: 7 devices in four states, 100 `ca.issue` samples of 1..100 ms,
/// two timeouts, 120 messages over two seconds and a throttled registration.
fn fed() -> (Recorder, Instant) {
    let recorder = Recorder::new();
    for _ in 0..7 {
        recorder.transition(None, crate::metrics::DeviceState::Pending);
    }
    for (to, n) in [
        (DeviceState::Online, 4),
        (DeviceState::Enrolling, 1),
        (DeviceState::Failed, 1),
    ] {
        for _ in 0..n {
            recorder.transition(Some(DeviceState::Pending), to);
        }
    }
    let end = Instant::now();
    for ms in 1..=100 {
        recorder.record(
            Phase::CaIssue,
            Outcome::Ok,
            end - Duration::from_millis(ms),
            end,
        );
    }
    for _ in 0..2 {
        recorder.record(
            Phase::CaIssue,
            Outcome::Timeout,
            end - Duration::from_secs(30),
            end,
        );
    }
    recorder.error(Phase::HubRegister, "http_429");
    recorder.error(Phase::HubRegister, "http_429");
    recorder.error(Phase::HubRegister, "http_429");
    recorder.error(Phase::CaIssue, "timeout");
    for _ in 0..120 {
        recorder.message_sent();
        recorder.message_bytes(1024, 1);
        recorder.message_acked();
    }
    (recorder, end)
}

#[test]
fn the_view_shows_states_latency_errors_and_rates() {
    let (recorder, now) = fed();
    let mut view = LiveView::new("quickstart", Duration::from_secs(45), 10);
    // Two seconds into the run: the history gets its first point.
    view.update(&recorder.snapshot(), now, Duration::from_secs(2));
    let mut terminal = Terminal::new(TestBackend::new(120, 36)).unwrap();
    terminal.draw(|frame| view.render(frame)).unwrap();
    let screen = screen(&terminal);

    assert!(row_with(&screen, "quickstart").contains("7/10 devices started"));
    // One gauge per state with its count.
    for (state, n) in [
        ("pending", 1),
        ("enrolling", 1),
        ("online", 4),
        ("failed", 1),
        ("renewing", 0),
    ] {
        // The gauge's label, at the left edge of the devices box.
        row_with(&screen, &format!("│{state:<10} {n:>7}"));
    }
    // ca.issue: 100 ok, 2 not ok, p50 of 1..100 ms is 50 ms, p99 is 99 ms (within HDR's 0.1%).
    let issue = row_with(&screen, "ca.issue  ");
    let issue = issue.replace('│', " ");
    let cells: Vec<&str> = issue.split_whitespace().collect();
    let at = cells.iter().position(|c| *c == "ca.issue").unwrap();
    assert_eq!(
        &cells[at..at + 5],
        ["ca.issue", "100", "2", "50.0ms", "99.0ms"]
    );
    // Errors by phase and kind, the largest first.
    let throttled = row_with(&screen, "http_429");
    assert!(throttled.contains("hub.register"), "{throttled}");
    assert!(
        throttled.trim_end_matches(['│', ' ']).ends_with('3'),
        "{throttled}"
    );
    assert!(row_with(&screen, "timeout").contains("ca.issue"));
    // Rates over the first two seconds: 100 enrolments, 120 messages.
    assert!(row_with(&screen, "enrolments/s ").contains("50.0"));
    assert!(row_with(&screen, "msgs/s ").contains("60.0"));
    assert!(row_with(&screen, "msgs/s, last 60 s").contains("(peak 60)"));
    // Bytes and meters next to the messages: 120 KiB over two seconds, one meter each.
    assert!(row_with(&screen, "bytes/s ").contains("60.0 KiB"));
    assert!(row_with(&screen, "bytes sent ").contains("120.0 KiB"));
    assert!(row_with(&screen, "4 KB meters ").contains("120"));
    assert!(row_with(&screen, "errors by phase and kind (4)").contains('┌'));
}

#[test]
fn rates_are_per_second_differences_and_history_is_bounded() {
    let recorder = Recorder::new();
    let mut view = LiveView::new("t", Duration::from_secs(600), 1);
    let t0 = Instant::now();
    view.update(&recorder.snapshot(), t0, Duration::ZERO);
    for second in 1..=(HISTORY as u64 + 10) {
        for _ in 0..second {
            recorder.message_acked();
        }
        let now = t0 + Duration::from_secs(second);
        view.update(&recorder.snapshot(), now, Duration::from_secs(second));
        // A redraw within the same second adds no point.
        view.update(
            &recorder.snapshot(),
            now + Duration::from_millis(250),
            Duration::from_secs(second),
        );
    }
    assert_eq!(view.message_history.len(), HISTORY);
    assert_eq!(view.message_history.back(), Some(&(HISTORY as u64 + 10)));
    assert_eq!(view.message_history.front(), Some(&11));
}

#[test]
fn latencies_read_in_their_unit() {
    assert_eq!(latency(850), "850µs");
    assert_eq!(latency(12_345), "12.3ms");
    assert_eq!(latency(1_200_000), "1.20s");
}

#[test]
fn the_header_counts_the_operators_methods_by_outcome() {
    let (recorder, now) = fed();
    let mut view = LiveView::new("commands", Duration::from_secs(60), 10);
    view.update(&recorder.snapshot(), now, Duration::from_secs(2));
    let mut terminal = Terminal::new(TestBackend::new(160, 36)).unwrap();
    terminal.draw(|frame| view.render(frame)).unwrap();
    assert!(!row_with(&screen(&terminal), "commands").contains("methods"));
    for outcome in [
        Outcome::Ok,
        Outcome::Ok,
        Outcome::Timeout,
        Outcome::Throttled,
    ] {
        recorder.record(Phase::MethodInvoke, outcome, now, now);
    }
    view.update(&recorder.snapshot(), now, Duration::from_secs(3));
    terminal.draw(|frame| view.render(frame)).unwrap();
    let header = screen(&terminal)[0].clone();
    assert!(
        header.contains("methods 2 ok, 1 timeout, 1 throttled"),
        "{header}"
    );
}
