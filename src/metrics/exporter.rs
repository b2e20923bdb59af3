//! The Prometheus `/metrics` endpoint: plain HTTP, text exposition format 0.0.4, rendered from a
//! fresh [`Recorder::snapshot`] on every scrape.
//!
//! Latencies become real Prometheus histograms (`fleetsim_phase_duration_seconds_bucket{le}`,
//! `_sum`, `_count`) whose cumulative bucket counts are read from the merged HDR histograms at
//! the fixed bounds of [`BUCKETS_SECONDS`]. A value is counted in a bucket only when the whole HDR
//! bucket holding it is at or below the bound, so counts are exact to the HDR precision (0.1%);
//! `_sum` adds each HDR bucket's middle value × its count, within the same 0.1%.
//!
//! Other samples (the embedded emulators' counters) come from a [`SampleSource`] the caller
//! plugs in, so this module needs nothing but the recorder (DESIGN.md: metrics uses only clock).
//! Writing the text by hand keeps the exporter free of a client crate: the format is a handful of
//! line shapes, and the recorder already holds everything a registry would.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use hdrhistogram::Histogram;
use tokio::net::TcpListener;

use super::recorder::{Recorder, Snapshot};

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the `fleetsim_phase_duration_seconds` buckets; `+Inf` follows.
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("metrics endpoint: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether a sample only goes up (counter) or may go both ways (gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One unlabelled sample with its family's metadata, from outside the recorder.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Full metric name, `fleetsim_` prefixed (counters end in `_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub value: f64,
}

/// Called on every scrape for samples the recorder does not hold.
pub type SampleSource = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    recorder: Arc<Recorder>,
    extra: Option<SampleSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ExporterError> {
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let recorder = recorder.clone();
            let extra = extra.clone();
            async move {
                let samples = extra.map(|f| f()).unwrap_or_default();
                let mut body = render(&recorder.snapshot(), &samples);
                if let Some(board) = recorder.board() {
                    render_events(&mut body, &board.events());
                }
                ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], body)
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// `fleetsim_events_total{kind}`: the scenario's events so far (revocations, methods, ...), for
/// Grafana annotations where they happened. Every kind is there from the start at 0, so the
/// first event of a kind is a change Prometheus can see (`changes()` needs a value before it).
pub fn render_events(out: &mut String, events: &[super::board::BoardEvent]) {
    let mut by_kind: std::collections::BTreeMap<&str, u64> =
        ["revoke", "method", "desired", "query", "c2d"]
            .into_iter()
            .map(|k| (k, 0))
            .collect();
    for e in events {
        *by_kind.entry(e.kind.as_str()).or_insert(0u64) += 1;
    }
    header(
        out,
        "fleetsim_events_total",
        "Scenario events fired so far (revoke, method, desired, query, c2d).",
        "counter",
    );
    for (kind, n) in by_kind {
        let _ = writeln!(
            out,
            "fleetsim_events_total{{kind=\"{}\"}} {n}",
            escape(kind)
        );
    }
}

/// The whole exposition: every `fleetsim_` family of the recorder, then `extra`.
pub fn render(snapshot: &Snapshot, extra: &[Sample]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    header(
        &mut out,
        "fleetsim_phase_duration_seconds",
        "Latency of each lifecycle phase from its intended start, by outcome.",
        "histogram",
    );
    for ((phase, outcome), h) in &snapshot.latency {
        let labels = format!(
            "phase=\"{}\",outcome=\"{}\"",
            escape(phase.name()),
            escape(outcome.name())
        );
        histogram(&mut out, "fleetsim_phase_duration_seconds", &labels, h);
    }

    header(
        &mut out,
        "fleetsim_devices",
        "Simulated devices in each lifecycle state.",
        "gauge",
    );
    for (state, n) in &snapshot.devices {
        let _ = writeln!(out, "fleetsim_devices{{state=\"{}\"}} {n}", escape(state));
    }

    header(
        &mut out,
        "fleetsim_messages_total",
        "Telemetry messages sent, acknowledged (PUBACK) and failed.",
        "counter",
    );
    for (result, n) in [
        ("sent", snapshot.messages_sent),
        ("acked", snapshot.messages_acked),
        ("failed", snapshot.messages_failed),
    ] {
        let _ = writeln!(out, "fleetsim_messages_total{{result=\"{result}\"}} {n}");
    }
    header(
        &mut out,
        "fleetsim_message_bytes_total",
        "Payload bytes of the telemetry messages sent.",
        "counter",
    );
    let _ = writeln!(out, "fleetsim_message_bytes_total {}", snapshot.bytes_sent);
    header(
        &mut out,
        "fleetsim_message_meters_total",
        "IoT Hub 4 KB meters of the telemetry messages sent (what they count against the daily quota).",
        "counter",
    );
    let _ = writeln!(
        out,
        "fleetsim_message_meters_total {}",
        snapshot.meters_sent
    );

    errors_and_retries(&mut out, snapshot);
    cert_health(&mut out, &snapshot.certs);

    for s in extra {
        header(&mut out, s.name, s.help, s.kind.name());
        let _ = writeln!(out, "{} {}", s.name, number(s.value));
    }
    out
}

/// Failed operations by phase and kind, and the clients' own retries.
fn errors_and_retries(out: &mut String, snapshot: &Snapshot) {
    header(
        out,
        "fleetsim_errors_total",
        "Failed operations by phase and error kind.",
        "counter",
    );
    for (key, n) in &snapshot.errors {
        // Phase names contain no '/', so the first one separates phase from kind.
        let (phase, kind) = key.split_once('/').unwrap_or((key.as_str(), "unknown"));
        let _ = writeln!(
            out,
            "fleetsim_errors_total{{phase=\"{}\",kind=\"{}\"}} {n}",
            escape(phase),
            escape(kind)
        );
    }

    header(
        out,
        "fleetsim_retries_total",
        "Retries a service client made by itself (EZCA: 2/4/8 s on 408/5xx and network errors).",
        "counter",
    );
    for (key, n) in &snapshot.retries {
        let mut parts = key.splitn(3, '/');
        let (service, endpoint, reason) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "fleetsim_retries_total{{service=\"{}\",endpoint=\"{}\",reason=\"{}\"}} {n}",
            escape(service),
            escape(endpoint),
            escape(reason)
        );
    }
}

/// The fleet's certificate health: held certificates by status, time to expiry, renewals.
fn cert_health(out: &mut String, c: &super::certs::CertSnapshot) {
    header(
        out,
        "fleetsim_certificates",
        "Certificates held by devices: valid (before the renewal point), expiring (past it), expired, revoked.",
        "gauge",
    );
    for (status, n) in [
        ("valid", c.valid),
        ("expiring", c.expiring),
        ("expired", c.expired),
        ("revoked", c.revoked),
    ] {
        let _ = writeln!(out, "fleetsim_certificates{{status=\"{status}\"}} {n}");
    }
    header(
        out,
        "fleetsim_certificate_time_to_expiry_seconds",
        "Real seconds held, unexpired certificates have left, as quantiles over the fleet.",
        "gauge",
    );
    let q = &c.time_to_expiry_seconds;
    for (quantile, v) in [
        ("0", q.min),
        ("0.1", q.p10),
        ("0.5", q.p50),
        ("0.9", q.p90),
        ("1", q.max),
    ] {
        let _ = writeln!(
            out,
            "fleetsim_certificate_time_to_expiry_seconds{{quantile=\"{quantile}\"}} {}",
            number(v)
        );
    }
    header(
        out,
        "fleetsim_renewals_total",
        "Certificate renewals that succeeded, and renewals given up at their deadline.",
        "counter",
    );
    for (result, n) in [("ok", c.renewals_ok), ("given_up", c.renewals_given_up)] {
        let _ = writeln!(out, "fleetsim_renewals_total{{result=\"{result}\"}} {n}");
    }
    for (name, help, kind, v) in [
        (
            "fleetsim_renewal_tries_failed_total",
            "Renewal tries the CA did not answer with a certificate (retried until the deadline).",
            "counter",
            c.renewal_tries_failed as f64,
        ),
        (
            "fleetsim_expired_before_renewal_total",
            "Devices whose certificate reached notAfter before a renewal succeeded.",
            "counter",
            c.expired_before_renewal as f64,
        ),
        (
            "fleetsim_renewal_success_ratio",
            "Renewals that succeeded over renewals that ended (1 when none has).",
            "gauge",
            c.renewal_success_ratio(),
        ),
    ] {
        header(out, name, help, kind);
        let _ = writeln!(out, "{name} {}", number(v));
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `_bucket` lines at [`BUCKETS_SECONDS`] and `+Inf`, then `_sum` and `_count`; the histogram
/// holds microseconds.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    let bounds_us: Vec<u64> = BUCKETS_SECONDS
        .iter()
        .map(|s| (s * 1_000_000.0).round() as u64)
        .collect();
    let mut counts = vec![0u64; bounds_us.len()];
    let mut sum_us = 0u128;
    for v in h.iter_recorded() {
        sum_us +=
            u128::from(h.median_equivalent(v.value_iterated_to())) * u128::from(v.count_at_value());
        // The highest value the HDR bucket may stand for: never count a value below a bound
        // it might exceed.
        let top = h.highest_equivalent(v.value_iterated_to());
        if let Some(first) = bounds_us.iter().position(|b| top <= *b) {
            counts[first] += v.count_at_value();
        }
    }
    let mut cumulative = 0u64;
    for (bound, n) in BUCKETS_SECONDS.iter().zip(&counts) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
            number(*bound)
        );
    }
    let count = h.len();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    // Whole microseconds divided once, so the text shows no float noise (0.012794, not …98).
    let sum_seconds = sum_us as f64 / 1_000_000.0;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", number(sum_seconds));
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// A float as Prometheus reads it (Rust's shortest round-trip form; `+Inf`/`NaN` spelled out).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
#[path = "exporter_tests.rs"]
mod tests;
