//! The HTML report's "Over time" section, drawn from the report's [`Timeline`] as inline SVG in
//! the style of the percentile charts: throughput (messages acked, enrolments, connects per
//! second), latency per phase (p50 and p99 of each interval's successes), devices per state, and
//! renewal/revocation events per interval (`ca.renew` and any `revoke.*` phase, by name).
//!
//! Interval figures are drawn as steps over the interval they describe, so a single interval is
//! still a visible line; device states are gauges, drawn point to point from zero at the start.
//! Each chart's `<svg>` has an `id` (`timeline-throughput`, `timeline-latency-<phase>`,
//! `timeline-states`, `timeline-events`) and the class `timechart`.

use std::fmt::Write as _;

use super::svg::{BOTTOM, H, LEFT, RIGHT, TOP, W, escape, nice_ceiling, trim, y_axis};
use super::timeline::{IntervalPhase, Timeline, TimelinePoint};
use crate::metrics::DeviceState;

const PALETTE: [&str; 10] = [
    "#1f5fbf", "#d9730d", "#17692b", "#b00020", "#7b3fb5", "#0f8b8d", "#8c564b", "#c2458f",
    "#555555", "#9a9a1a",
];

/// One line of a chart: pieces of polyline (a gap where there is no data).
struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    pieces: Vec<Vec<(f64, f64)>>,
}

/// The section: a heading, a line of explanation and the charts.
pub fn section(timeline: &Timeline) -> String {
    let points = &timeline.points;
    let mut s = format!(
        "<h2>Over time</h2><p>One point every {} s (the scenario's <code>report.interval</code>); \
         rates and latencies are per interval, latency from when each operation was due.</p>",
        trim(timeline.interval_seconds)
    );
    if points.is_empty() {
        s.push_str("<p>no intervals recorded</p>");
        return s;
    }
    s.push_str("<div class=\"charts\">");
    let t_max = points.last().map_or(0.0, |p| p.t);
    let throughput = throughput(points);
    figure(
        &mut s,
        "timeline-throughput",
        "Throughput",
        &throughput,
        t_max,
        "/s",
    );
    latencies(&mut s, points, t_max);
    let states = states(points);
    if states.is_empty() {
        s.push_str("<p>no device changed state</p>");
    } else {
        figure(
            &mut s,
            "timeline-states",
            "Devices by state",
            &states,
            t_max,
            "",
        );
    }
    figure(
        &mut s,
        "timeline-events",
        "Renewal and revocation events per interval",
        &events(points),
        t_max,
        "",
    );
    s.push_str("</div>");
    s
}

fn line(
    label: impl Into<String>,
    color: &'static str,
    dashed: bool,
    pieces: Vec<Vec<(f64, f64)>>,
) -> Series {
    Series {
        label: label.into(),
        color,
        dashed,
        pieces,
    }
}

/// Messages acked, enrolments and connects per second.
fn throughput(points: &[TimelinePoint]) -> Vec<Series> {
    let rate = |f: &dyn Fn(&TimelinePoint, Option<&TimelinePoint>) -> f64| {
        steps(points, |p, prev, dt| Some(f(p, prev) / dt))
    };
    let ok = |phase: &'static str| {
        move |p: &TimelinePoint, _: Option<&TimelinePoint>| {
            p.phases.get(phase).map_or(0.0, |i| i.ok as f64)
        }
    };
    let acked = rate(&|p, prev| {
        p.messages_acked
            .saturating_sub(prev.map_or(0, |q| q.messages_acked)) as f64
    });
    vec![
        line("messages acked/s", PALETTE[0], false, acked),
        line(
            "enrolments/s (ca.issue ok)",
            PALETTE[1],
            false,
            rate(&ok("ca.issue")),
        ),
        line(
            "connects/s (mqtt.connect ok)",
            PALETTE[2],
            false,
            rate(&ok("mqtt.connect")),
        ),
    ]
}

/// One chart per phase with latencies: each interval's p99 and p50.
fn latencies(s: &mut String, points: &[TimelinePoint], t_max: f64) {
    let mut phases: Vec<&String> = points.iter().flat_map(|p| p.phases.keys()).collect();
    phases.sort();
    phases.dedup();
    for phase in phases {
        let pick = |f: fn(&IntervalPhase) -> Option<f64>| {
            steps(points, move |p, _, _| p.phases.get(phase).and_then(f))
        };
        let series = vec![
            line("p99", PALETTE[3], false, pick(|i| i.p99_ms)),
            line("p50", PALETTE[0], true, pick(|i| i.p50_ms)),
        ];
        if series.iter().any(|s| !s.pieces.is_empty()) {
            let id = format!("timeline-latency-{phase}");
            let title = format!("{phase} latency");
            figure(s, &id, &title, &series, t_max, "ms");
        }
    }
}

/// Devices per state, for the states any device was ever in.
fn states(points: &[TimelinePoint]) -> Vec<Series> {
    DeviceState::ALL
        .iter()
        .enumerate()
        .filter(|(_, st)| points.iter().any(|p| state(p, st.name()) != 0))
        .map(|(i, st)| {
            let gauge = std::iter::once((0.0, 0.0))
                .chain(points.iter().map(|p| (p.t, state(p, st.name()) as f64)))
                .collect();
            line(st.name(), PALETTE[i % PALETTE.len()], false, vec![gauge])
        })
        .collect()
}

/// Renewals always (a flat zero says "none"), revocation phases when the run had any; ok and
/// failed per interval.
fn events(points: &[TimelinePoint]) -> Vec<Series> {
    let mut event_phases = vec!["ca.renew".to_string()];
    let mut revokes: Vec<&String> = points
        .iter()
        .flat_map(|p| p.phases.keys())
        .filter(|k| k.starts_with("revoke."))
        .collect();
    revokes.sort();
    revokes.dedup();
    event_phases.extend(revokes.into_iter().cloned());
    let mut events = Vec::new();
    for (i, phase) in event_phases.iter().enumerate() {
        for (kind, not_ok) in [("ok", false), ("failed", true)] {
            let pieces = steps(points, |p, _, _| {
                let i = p.phases.get(phase.as_str());
                Some(i.map_or(0, |i| if not_ok { i.not_ok } else { i.ok }) as f64)
            });
            let color = PALETTE[(2 * i + usize::from(not_ok)) % PALETTE.len()];
            events.push(line(format!("{phase} {kind}"), color, not_ok, pieces));
        }
    }
    events
}

fn state(p: &TimelinePoint, name: &str) -> i64 {
    p.devices.get(name).copied().unwrap_or(0)
}

/// Step pieces: each interval's value (from `value(point, previous point, seconds)`) held from
/// the interval's start to its end; `None` leaves a gap. Zero-length intervals are skipped.
fn steps(
    points: &[TimelinePoint],
    value: impl Fn(&TimelinePoint, Option<&TimelinePoint>, f64) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    let mut pieces: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut open = false;
    let mut start = 0.0;
    let mut prev: Option<&TimelinePoint> = None;
    for p in points {
        let dt = p.t - start;
        if dt > 1e-9 {
            match value(p, prev, dt) {
                Some(v) if v.is_finite() => {
                    if !open {
                        pieces.push(Vec::new());
                        open = true;
                    }
                    if let Some(piece) = pieces.last_mut() {
                        piece.push((start, v));
                        piece.push((p.t, v));
                    }
                }
                _ => open = false,
            }
            start = p.t;
        }
        prev = Some(p);
    }
    pieces
}

/// Appends one chart with its caption and legend.
fn figure(s: &mut String, id: &str, title: &str, series: &[Series], t_max: f64, unit: &str) {
    let _ = write!(s, "<figure><figcaption>{}</figcaption>", escape(title));
    s.push_str(&chart(id, series, t_max, unit));
    s.push_str("<div>");
    for line in series {
        let _ = write!(
            s,
            "<span style=\"color:{}\">{} {}</span> ",
            line.color,
            if line.dashed { "- -" } else { "&#9473;" },
            escape(&line.label)
        );
    }
    s.push_str("</div></figure>");
}

fn chart(id: &str, series: &[Series], t_max: f64, unit: &str) -> String {
    let t_max = t_max.max(1e-3);
    let top = series
        .iter()
        .flat_map(|l| l.pieces.iter().flatten())
        .map(|p| p.1)
        .fold(0.0, f64::max);
    // Counts and device numbers get whole ticks: a ceiling of at least 4.
    let y_max = if unit == "ms" || unit == "/s" {
        nice_ceiling(top)
    } else {
        nice_ceiling(top.max(4.0))
    };
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + x / t_max * pw;
    let sy = |y: f64| TOP + ph - y / y_max * ph;
    let mut s = format!(
        "<svg id=\"{}\" class=\"timechart\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\"><rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" \
         stroke=\"#ccc\"/>",
        escape(id)
    );
    let step = nice_ceiling(t_max / 6.0);
    let mut tick = 0.0;
    while tick <= t_max + 1e-9 {
        let x = sx(tick);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} s</text>",
            TOP + ph,
            H - 12.0,
            trim(tick)
        );
        tick += step;
    }
    let suffix = match unit {
        "" | "/s" => unit.to_string(),
        _ => format!(" {unit}"),
    };
    y_axis(&mut s, y_max, sy, &suffix);
    for line in series {
        for piece in &line.pieces {
            let points = piece
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect::<Vec<_>>()
                .join(" ");
            let dash = if line.dashed {
                " stroke-dasharray=\"4 3\""
            } else {
                ""
            };
            let _ = write!(
                s,
                "<polyline points=\"{points}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{dash}>\
                 <title>{}</title></polyline>",
                line.color,
                escape(&line.label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn point(t: f64, acked: u64, issue_ok: u64, p99: Option<f64>) -> TimelinePoint {
        let mut phases = BTreeMap::new();
        phases.insert(
            "ca.issue".to_string(),
            IntervalPhase {
                ok: issue_ok,
                p50_ms: p99.map(|v| v / 2.0),
                p99_ms: p99,
                ..Default::default()
            },
        );
        TimelinePoint {
            t,
            devices: [("online".to_string(), issue_ok as i64)].into(),
            messages_acked: acked,
            phases,
            ..Default::default()
        }
    }

    #[test]
    fn steps_hold_each_intervals_rate_and_leave_gaps() {
        let points = [
            point(5.0, 50, 10, Some(8.0)),
            point(10.0, 150, 0, None),
            point(12.0, 170, 4, Some(2.0)),
        ];
        let acked = steps(&points, |p, prev, dt| {
            Some((p.messages_acked - prev.map_or(0, |q| q.messages_acked)) as f64 / dt)
        });
        assert_eq!(
            acked,
            vec![vec![
                (0.0, 10.0),
                (5.0, 10.0),
                (5.0, 20.0),
                (10.0, 20.0),
                (10.0, 10.0),
                (12.0, 10.0)
            ]]
        );
        let p99 = steps(&points, |p, _, _| p.phases["ca.issue"].p99_ms);
        assert_eq!(
            p99,
            vec![vec![(0.0, 8.0), (5.0, 8.0)], vec![(10.0, 2.0), (12.0, 2.0)]]
        );
    }

    #[test]
    fn the_section_has_every_chart_with_ids() {
        let timeline = Timeline {
            interval_seconds: 5.0,
            points: vec![
                point(5.0, 50, 10, Some(8.0)),
                point(10.0, 150, 3, Some(4.0)),
            ],
        };
        let html = section(&timeline);
        for id in [
            "timeline-throughput",
            "timeline-latency-ca.issue",
            "timeline-states",
            "timeline-events",
        ] {
            assert!(html.contains(&format!("<svg id=\"{id}\"")), "{id}");
        }
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("ca.renew ok") && !html.contains("revoke."));
        let mut with_revoke = timeline.clone();
        with_revoke.points[1].phases.insert(
            "revoke.cutoff".into(),
            IntervalPhase {
                ok: 2,
                ..Default::default()
            },
        );
        let html = section(&with_revoke);
        assert!(html.contains("revoke.cutoff ok") && html.contains("revoke.cutoff failed"));
        assert!(!html.contains("timeline-latency-revoke.cutoff"));
    }
}
