//! The HTML report (`<report>.html`): one self-contained file for people. Inline CSS, charts as
//! inline SVG drawn here, no scripts and no external resources, so it opens offline and can be
//! attached to a ticket. It shows the run's counts, the thresholds, a latency-by-percentile curve
//! per phase (the HdrHistogram view: the tail spread out on a log scale of 1/(1 − q)), the
//! run over time ([`super::timecharts`]: throughput, latency, device states, renewal and
//! revocation events), the phase table, provisioning (DPS runs), certificates, the errors and
//! the scenario as written.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

use super::error::ReportError;
use super::model::Report;
use super::stats::LatencyStats;
use super::svg::{BOTTOM, H, LEFT, RIGHT, TOP, W, escape, nice_ceiling, y_axis};
use crate::metrics::Outcome;

/// The curve runs to the 99.99th percentile: 10^-4 of the samples beyond it.
const NINES: f64 = 4.0;

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px;border-bottom:1px solid #ddd;\
text-align:right}td:first-child,th:first-child{text-align:left}.pass{color:#17692b;font-weight:bold}\
.fail{color:#b00020;font-weight:bold}.charts{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:0}figcaption{font-weight:bold}pre{background:#f5f5f5;padding:1em;overflow:auto}\
svg text{font-size:11px;fill:#444}";

/// Writes the HTML report of `report` (with `scenario_text`, the YAML as written) to `path`.
pub fn write_html(report: &Report, scenario_text: &str, path: &Path) -> Result<(), ReportError> {
    let html = render(report, scenario_text)?;
    std::fs::write(path, html).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The page: a summary, then one section after another.
pub fn render(report: &Report, scenario_text: &str) -> Result<String, ReportError> {
    let mut s = String::new();
    summary(&mut s, report);
    thresholds(&mut s, report);
    percentile_charts(&mut s, report)?;
    if let Some(timeline) = &report.timeline {
        s.push_str(&super::timecharts::section(timeline));
    }
    phases(&mut s, report);
    if let Some(p) = &report.provisioning {
        rows_section(&mut s, "Provisioning", p.rows());
    }
    if let Some(c) = &report.certificates {
        rows_section(&mut s, "Certificates", c.rows());
    }
    if let Some(o) = &report.operator {
        s.push_str("<h2>Operator</h2><table>");
        for (label, value) in o.rows() {
            let _ = write!(
                s,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(&label),
                escape(&value)
            );
        }
        s.push_str("</table>");
    }
    if let Some(b) = &report.backend {
        s.push_str("<h2>Backend</h2><table>");
        for (label, value) in b.rows() {
            let _ = write!(
                s,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(&label),
                escape(&value)
            );
        }
        s.push_str("</table>");
    }
    errors(&mut s, report);
    let _ = writeln!(
        s,
        "<h2>Scenario</h2><pre>{}</pre></body></html>",
        escape(scenario_text)
    );
    Ok(s)
}

/// A section of (label, value) rows.
fn rows_section(s: &mut String, title: &str, rows: Vec<(String, String)>) {
    let _ = write!(s, "<h2>{title}</h2><table>");
    for (label, value) in rows {
        let _ = write!(
            s,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&label),
            escape(&value)
        );
    }
    s.push_str("</table>");
}

/// The document's head and the run's counts.
fn summary(s: &mut String, report: &Report) {
    let title = format!("fleetsim report: {}", report.scenario);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{CSS}</style></head><body><h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    let d = &report.devices;
    let m = &report.messages;
    let interrupted = if report.interrupted {
        ", interrupted"
    } else {
        ""
    };
    let merged = match report.merged_from.len() {
        0 => String::new(),
        n => format!(", merged from {n} reports"),
    };
    let _ = write!(
        s,
        "<p>{} target, started {}, {:.1} s{interrupted}{merged}</p><p>devices: {} planned, {} \
         started, {} enrolled, {} connected, {} renewed ({} renewals), {} failed<br>messages: {} \
         sent, {} acked, {} failed; {} bytes ({}), {} meters of 4 KB{}</p>",
        escape(&report.target),
        escape(&report.started_at),
        report.wall_seconds,
        d.planned,
        d.started,
        d.enrolled,
        d.connected,
        d.renewed,
        d.renewals,
        d.failed,
        m.sent,
        m.acked,
        m.failed,
        m.bytes,
        crate::metrics::human_bytes(m.bytes),
        m.meters,
        report.hub.as_ref().map_or(String::new(), |h| format!(
            "<br>hub received: {} messages, {} bytes, {} meters",
            h.messages, h.bytes, h.meters
        ))
    );
}

fn thresholds(s: &mut String, report: &Report) {
    if report.thresholds.is_empty() {
        return;
    }
    s.push_str(
        "<h2>Thresholds</h2><table><tr><th>threshold</th><th>result</th><th>actual</th></tr>",
    );
    for t in &report.thresholds {
        let (class, word) = if t.pass {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
            escape(&t.threshold),
            escape(&t.actual)
        );
    }
    s.push_str("</table>");
}

/// One latency-by-percentile chart per phase with successes.
fn percentile_charts(s: &mut String, report: &Report) -> Result<(), ReportError> {
    let (latency, uncorrected) = report.histograms()?;
    s.push_str(
        "<h2>Latency by percentile</h2><p>Successful operations, from when each was due; \
         dashed: from when it actually began (uncorrected).</p><div class=\"charts\">",
    );
    for ((phase, outcome), h) in latency.iter().filter(|((_, o), _)| *o == Outcome::Ok) {
        let extra = uncorrected.get(&(*phase, *outcome));
        let _ = write!(
            s,
            "<figure><figcaption>{} ({} samples)</figcaption>{}</figure>",
            escape(phase.name()),
            h.len(),
            chart(h, extra)
        );
    }
    s.push_str("</div>");
    Ok(())
}

fn phases(s: &mut String, report: &Report) {
    s.push_str(
        "<h2>Phases</h2><table><tr><th>phase</th><th>outcome</th><th>count</th><th>p50 ms</th>\
         <th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>",
    );
    for p in &report.phases {
        let mut row = |name: &str, l: &LatencyStats| {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
                 <td>{:.2}</td><td>{:.2}</td></tr>",
                escape(name),
                escape(&p.outcome),
                l.count,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms
            );
        };
        row(&p.phase, &p.latency);
        if let Some(u) = &p.uncorrected {
            row(&format!("{} (uncorrected)", p.phase), u);
        }
    }
    s.push_str("</table>");
}

fn errors(s: &mut String, report: &Report) {
    s.push_str("<h2>Errors</h2>");
    if report.errors.is_empty() {
        s.push_str("<p>none</p>");
    } else {
        s.push_str("<table><tr><th>phase/kind</th><th>count</th></tr>");
        for (kind, n) in &report.errors {
            let _ = write!(s, "<tr><td>{}</td><td>{n}</td></tr>", escape(kind));
        }
        s.push_str("</table>");
    }
    if !report.retries.is_empty() {
        s.push_str(
            "<h2>Client retries</h2><table><tr><th>service/endpoint/reason</th><th>count</th></tr>",
        );
        for (key, n) in &report.retries {
            let _ = write!(s, "<tr><td>{}</td><td>{n}</td></tr>", escape(key));
        }
        s.push_str("</table>");
    }
}

/// Points (nines, ms) of a histogram's percentile curve: x = −log10(1 − q), from the median out.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=(NINES * 20.0) as u32)
        .map(|i| {
            let x = 0.3 + f64::from(i) * (NINES - 0.3) / (NINES * 20.0);
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

fn chart(h: &Histogram<u64>, uncorrected: Option<&Histogram<u64>>) -> String {
    let main = curve(h);
    let dashed = uncorrected.map(curve);
    let top = main
        .iter()
        .chain(dashed.iter().flatten())
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let y_max = nice_ceiling(top);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + x / NINES * pw;
    let sy = |y: f64| TOP + ph - y / y_max * ph;
    let path = |points: &[(f64, f64)]| {
        points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#ccc\"/>"
    );
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ] {
        let x = sx(nines);
        // The last label ends at the plot's edge so it is not cut off by the SVG's border.
        let anchor = if nines >= 4.0 { "end" } else { "middle" };
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{label}</text>",
            TOP + ph,
            H - 12.0
        );
    }
    y_axis(&mut s, y_max, sy, " ms");
    if let Some(d) = &dashed {
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#888\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>",
            path(d)
        );
    }
    let _ = write!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\"/></svg>",
        path(&main)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Phase, Recorder};
    use std::time::{Duration, Instant};

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let r = Recorder::new();
        let t0 = Instant::now();
        for ms in 1..=200u64 {
            let end = t0 + Duration::from_millis(ms);
            r.record(Phase::CaIssue, Outcome::Ok, t0, end);
            r.record_with_actual(
                Phase::MqttPublish,
                Outcome::Ok,
                t0,
                t0 + Duration::from_millis(ms / 2),
                end,
            );
        }
        r.error(Phase::CaIssue, "http_<500>");
        let mut report =
            Report::new("demo <b>", "embedded", "now".into(), 1.0, r.snapshot()).unwrap();
        report.thresholds =
            crate::report::thresholds::evaluate(&["ca.issue p99 < 1ms".parse().unwrap()], &report)
                .unwrap();
        let html = render(&report, "name: demo\nnote: \"a < b\"\n").unwrap();

        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert_eq!(
            html.matches("<svg").count(),
            2,
            "one chart per phase with ok samples"
        );
        assert_eq!(
            html.matches("stroke-dasharray").count(),
            1,
            "uncorrected curve for publish"
        );
        for external in [
            "<script", "src=", "href=", "http:", "https:", "@import", "url(",
        ] {
            assert!(!html.contains(external), "{external} in the page");
        }
        assert!(html.contains("demo &lt;b&gt;") && !html.contains("demo <b>"));
        assert!(html.contains("http_&lt;500&gt;"));
        assert!(html.contains("note: &quot;a &lt; b&quot;"));
        assert!(html.contains("class=\"fail\">FAIL</td>"));
    }
}
