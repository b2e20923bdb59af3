//! What the live view shows, and how it is drawn.
//!
//! [`LiveView::update`] turns a recorder snapshot into a small summary (the view keeps no
//! histograms and nothing per device, so its cost does not grow with the fleet), and keeps one
//! point per second of history for the sparklines. [`LiveView::render`] draws the summary into a
//! ratatui frame; it does no measuring of its own, so a test backend shows exactly what a
//! terminal would.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, LineGauge, Paragraph, Row, Sparkline, Table};

use crate::metrics::{DeviceState, Outcome, Phase, Snapshot, human_bytes};

/// How much history the sparklines keep: one point per second.
const HISTORY: usize = 60;

/// One phase's line in the table.
#[derive(Debug, Clone, PartialEq)]
struct PhaseRow {
    phase: Phase,
    ok: u64,
    /// Every outcome but `ok` (error, timeout, throttled, rejected).
    not_ok: u64,
    /// Of the `ok` outcomes, in microseconds.
    p50_us: u64,
    p99_us: u64,
}

/// Cumulative counters the rates are differences of.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    enrolments: u64,
    connects: u64,
    messages: u64,
    bytes: u64,
}

impl Counters {
    fn of(s: &Snapshot) -> Self {
        Counters {
            enrolments: s.count(Phase::CaIssue, Outcome::Ok),
            connects: s.count(Phase::MqttConnect, Outcome::Ok)
                + s.count(Phase::MqttReconnect, Outcome::Ok),
            messages: s.messages_acked,
            bytes: s.bytes_sent,
        }
    }
}

/// Per-second rates over the last point of history.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    enrolments: f64,
    connects: f64,
    messages: f64,
    bytes: f64,
}

pub struct LiveView {
    title: String,
    duration: Duration,
    planned: u64,
    elapsed: Duration,
    states: Vec<(DeviceState, i64)>,
    phases: Vec<PhaseRow>,
    /// `(phase/kind, count)`, largest first.
    errors: Vec<(String, u64)>,
    messages: (u64, u64, u64),
    /// Payload bytes and IoT Hub 4 KB meters of the messages sent.
    volume: (u64, u64),
    rates: Rates,
    /// The counters at the last history point.
    mark: Option<(Instant, Counters)>,
    message_history: VecDeque<u64>,
    enrolment_history: VecDeque<u64>,
    /// The operator's direct methods by outcome, once there are any (see [`operator_summary`]).
    operator: Option<String>,
}

impl LiveView {
    /// A view of a run called `title`, planned to last `duration` with `planned` devices.
    pub fn new(title: &str, duration: Duration, planned: u64) -> Self {
        LiveView {
            title: title.to_string(),
            duration,
            planned,
            elapsed: Duration::ZERO,
            states: DeviceState::ALL.iter().map(|s| (*s, 0)).collect(),
            phases: Vec::new(),
            errors: Vec::new(),
            messages: (0, 0, 0),
            volume: (0, 0),
            rates: Rates::default(),
            mark: None,
            message_history: VecDeque::with_capacity(HISTORY),
            enrolment_history: VecDeque::with_capacity(HISTORY),
            operator: None,
        }
    }

    /// Takes in the recorder's state at `now`, `elapsed` into the run.
    pub fn update(&mut self, s: &Snapshot, now: Instant, elapsed: Duration) {
        self.elapsed = elapsed;
        self.states = DeviceState::ALL
            .iter()
            .map(|st| (*st, s.devices.get(st.name()).copied().unwrap_or(0)))
            .collect();
        self.phases = Phase::ALL
            .iter()
            .filter_map(|&phase| {
                let not_ok = Outcome::ALL[1..].iter().map(|&o| s.count(phase, o)).sum();
                let ok = s.latency.get(&(phase, Outcome::Ok));
                if ok.is_none() && not_ok == 0 {
                    return None;
                }
                Some(PhaseRow {
                    phase,
                    ok: ok.map_or(0, |h| h.len()),
                    not_ok,
                    p50_us: ok.map_or(0, |h| h.value_at_quantile(0.50)),
                    p99_us: ok.map_or(0, |h| h.value_at_quantile(0.99)),
                })
            })
            .collect();
        let mut errors: Vec<_> = s.errors.iter().map(|(k, n)| (k.clone(), *n)).collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.errors = errors;
        self.messages = (s.messages_sent, s.messages_acked, s.messages_failed);
        self.volume = (s.bytes_sent, s.meters_sent);
        self.operator = operator_summary(s);

        let counters = Counters::of(s);
        // The first history point counts from the start of the run.
        let run_start = now.checked_sub(elapsed).unwrap_or(now);
        let (at, before) = *self.mark.get_or_insert((run_start, Counters::default()));
        let dt = now.saturating_duration_since(at).as_secs_f64();
        if dt >= 1.0 {
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            self.rates = Rates {
                enrolments: rate(counters.enrolments, before.enrolments),
                connects: rate(counters.connects, before.connects),
                messages: rate(counters.messages, before.messages),
                bytes: rate(counters.bytes, before.bytes),
            };
            push(
                &mut self.message_history,
                self.rates.messages.round() as u64,
            );
            push(
                &mut self.enrolment_history,
                self.rates.enrolments.round() as u64,
            );
            self.mark = Some((now, counters));
        }
    }

    pub fn render(&self, frame: &mut Frame) {
        let [header, top, middle, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(DeviceState::ALL.len() as u16 + 2),
            Constraint::Min(5),
            Constraint::Length(5),
        ])
        .areas(frame.area());
        self.render_header(frame, header);
        let [devices, rates] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(top);
        self.render_devices(frame, devices);
        self.render_rates(frame, rates);
        let [phases, errors] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                .areas(middle);
        self.render_phases(frame, phases);
        self.render_errors(frame, errors);
        let [messages, enrolments] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(bottom);
        sparkline(frame, messages, "msgs/s", &self.message_history);
        sparkline(frame, enrolments, "enrolments/s", &self.enrolment_history);
    }

    fn render_header(&self, frame: &mut Frame, area: Rect) {
        let started: i64 = self.states.iter().map(|(_, n)| n).sum();
        let operator = self
            .operator
            .as_ref()
            .map_or(String::new(), |o| format!("{o}   "));
        let line = Line::from(vec![
            Span::styled(" fleetsim ", Style::new().bold().reversed()),
            Span::raw(format!(
                " {}   {:.1} s of {:.0} s   {started}/{} devices started   {operator}",
                self.title,
                self.elapsed.as_secs_f64(),
                self.duration.as_secs_f64(),
                self.planned,
            )),
            Span::styled("q or Ctrl-C: stop and write the report", Style::new().dim()),
        ]);
        frame.render_widget(Paragraph::new(line), area);
    }

    fn render_devices(&self, frame: &mut Frame, area: Rect) {
        let block = Block::bordered().title(" devices by state ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let rows = Layout::vertical(self.states.iter().map(|_| Constraint::Length(1))).split(inner);
        let total = self.planned.max(1) as f64;
        for ((state, n), row) in self.states.iter().zip(rows.iter()) {
            let gauge = LineGauge::default()
                .ratio((*n as f64 / total).clamp(0.0, 1.0))
                .label(format!("{:<10} {n:>7}", state.name()))
                .filled_symbol("█")
                .unfilled_symbol(" ")
                .filled_style(Style::new().fg(state_color(*state)));
            frame.render_widget(gauge, *row);
        }
    }

    fn render_rates(&self, frame: &mut Frame, area: Rect) {
        let (sent, acked, failed) = self.messages;
        let (bytes, meters) = self.volume;
        // As many lines as there are device states: the two boxes are as tall.
        let lines = vec![
            kv("enrolments/s", format!("{:.1}", self.rates.enrolments)),
            kv("connects/s", format!("{:.1}", self.rates.connects)),
            kv("msgs/s", format!("{:.1}", self.rates.messages)),
            kv("bytes/s", human_bytes(self.rates.bytes as u64)),
            kv("msgs sent", sent.to_string()),
            kv("msgs acked", acked.to_string()),
            kv("msgs failed", failed.to_string()),
            kv("bytes sent", human_bytes(bytes)),
            kv("4 KB meters", meters.to_string()),
        ];
        let block = Block::bordered().title(" rates (last second) ");
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }

    fn render_phases(&self, frame: &mut Frame, area: Rect) {
        let header = Row::new(["phase", "ok", "not ok", "p50", "p99"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        let rows = self.phases.iter().map(|p| {
            Row::new([
                p.phase.name().to_string(),
                p.ok.to_string(),
                p.not_ok.to_string(),
                latency(p.p50_us),
                latency(p.p99_us),
            ])
        });
        let widths = [
            Constraint::Length(18),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(9),
        ];
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" latency per phase (ok, from intended start) "));
        frame.render_widget(table, area);
    }

    fn render_errors(&self, frame: &mut Frame, area: Rect) {
        let header =
            Row::new(["phase", "kind", "count"]).style(Style::new().add_modifier(Modifier::BOLD));
        let rows = self.errors.iter().map(|(key, n)| {
            let (phase, kind) = key.split_once('/').unwrap_or((key.as_str(), ""));
            Row::new([phase.to_string(), kind.to_string(), n.to_string()])
                .style(Style::new().fg(Color::Red))
        });
        let widths = [
            Constraint::Length(18),
            Constraint::Fill(1),
            Constraint::Length(8),
        ];
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(
                " errors by phase and kind ({}) ",
                self.errors.iter().map(|(_, n)| n).sum::<u64>()
            )));
        frame.render_widget(table, area);
    }
}

/// The operator's direct methods by outcome (`methods 20 ok, 3 offline, …`), once any was
/// invoked; outcomes that did not happen are left out.
pub fn operator_summary(s: &Snapshot) -> Option<String> {
    let counts: Vec<String> = Outcome::ALL
        .iter()
        .map(|&o| (o, s.count(Phase::MethodInvoke, o)))
        .filter(|(o, n)| *n > 0 || *o == Outcome::Ok)
        .map(|(o, n)| format!("{n} {}", o.name()))
        .collect();
    let any = Outcome::ALL
        .iter()
        .any(|&o| s.count(Phase::MethodInvoke, o) > 0);
    any.then(|| format!("methods {}", counts.join(", ")))
}

fn push(history: &mut VecDeque<u64>, value: u64) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(value);
}

fn sparkline(frame: &mut Frame, area: Rect, what: &str, history: &VecDeque<u64>) {
    let peak = history.iter().copied().max().unwrap_or(0);
    let title = format!(" {what}, last {HISTORY} s (peak {peak}) ");
    // The newest point at the right edge, as a strip chart scrolls.
    let width = area.width.saturating_sub(2) as usize;
    let skip = history.len().saturating_sub(width);
    let data: Vec<u64> = history.iter().skip(skip).copied().collect();
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title))
            .data(&data)
            .style(Style::new().fg(Color::Cyan)),
        area,
    );
}

fn kv(key: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::raw(format!(" {key:<13}")),
        Span::styled(format!("{value:>10}"), Style::new().bold()),
    ])
}

fn state_color(state: DeviceState) -> Color {
    match state {
        DeviceState::Online => Color::Green,
        DeviceState::Failed | DeviceState::Revoked => Color::Red,
        DeviceState::Backoff => Color::Yellow,
        DeviceState::Done => Color::Gray,
        _ => Color::Blue,
    }
}

/// A latency in the unit that reads best: `850µs`, `12.3ms`, `1.20s`.
pub fn latency(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
