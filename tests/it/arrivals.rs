//! Arrival models end to end against the embedded emulators: the open model keeps its schedule
//! when the CA is slow (the slowness shows as latency, not as a stretched test), a device that
//! cannot start on time is counted as late with its lateness recorded and its latency counted
//! from its slot, and the closed model never has more than `max_in_flight` devices enrolling.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetsim::fleet::{self, RunOptions};
use fleetsim::report::{LatencyStats, Report};

fn phase<'a>(r: &'a Report, name: &str) -> Option<&'a LatencyStats> {
    r.phases
        .iter()
        .find(|p| p.phase == name && p.outcome == "ok")
        .map(|p| &p.latency)
}

async fn run(text: &str) -> Report {
    let scenario = fleetsim::scenario::parse(text, Path::new("arrivals.yaml")).expect("parses");
    fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes")
        .report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_keeps_its_schedule_when_the_ca_is_slow() {
    // 20 devices due over the first second; the CA signs 5 per second, so a scheduler that waited
    // for the CA would have started about 12 of them by the end.
    let report = run("name: slow-ca\nduration: 2500ms\ntarget:\n  embedded:\n    ca:\n      issuance_rate: 5/s\n      queue: 10s\n      latency: {p50: 100ms, p99: 200ms}\n\
         fleet:\n  devices: 20\n  arrival:\n    rate: 20/s\ntelemetry:\n  interval: 1s\n")
    .await;
    let d = &report.devices;
    assert_eq!((d.planned, d.started), (20, 20), "{d:?}");
    // Starting on time does not wait for the CA: whatever lateness this (shared, busy) machine
    // caused is counted and recorded, and is far below the CA's delay (a closed loop behind the
    // CA would start the last device ~3 s late). The margin is one a loaded 2-core machine keeps
    // (150 ms was not always).
    match phase(&report, "arrival.late") {
        Some(late) => {
            assert_eq!(late.count, d.late);
            assert!(late.max_ms < 1000.0, "late by up to {} ms", late.max_ms);
        }
        None => assert_eq!(d.late, 0),
    }
    // The CA's slowness is in the latency instead.
    let issue = phase(&report, "ca.issue").expect("issuances recorded");
    assert!(issue.max_ms >= 1000.0, "ca.issue max {} ms", issue.max_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_starts_are_counted_and_latency_counts_from_the_slot() {
    // Due at 20/s, but only 2 may enrol at once and each enrolment takes about 200 ms: most
    // devices wait for a place past their slot.
    let report = run("name: capped\nduration: 4s\ntarget:\n  embedded:\n    ca:\n      latency: {p50: 200ms, p99: 250ms}\n\
         fleet:\n  devices: 10\n  arrival: {rate: 20/s, max_in_flight: 2}\ntelemetry:\n  interval: 500ms\n")
    .await;
    let d = &report.devices;
    assert_eq!((d.started, d.connected, d.failed), (10, 10, 0), "{d:?}");
    assert!(d.late >= 6, "only {} late", d.late);
    let late = phase(&report, "arrival.late").expect("lateness recorded");
    assert_eq!(late.count, d.late);
    // The last devices waited for four rounds of ~200 ms less their 50 ms spacing.
    assert!(late.max_ms >= 400.0, "late by at most {} ms", late.max_ms);
    // Enrolment to first telemetry counts from the slot, so it includes the wait for a place.
    let first = phase(&report, "first_telemetry").expect("first telemetry recorded");
    let issue = phase(&report, "ca.issue").expect("issuances recorded");
    assert!(
        first.max_ms >= late.max_ms + issue.p50_ms * 0.5,
        "first_telemetry max {} ms, late max {} ms, ca.issue p50 {} ms",
        first.max_ms,
        late.max_ms,
        issue.p50_ms
    );
}

/// `fleetsim_devices{state="enrolling"}` from a scrape of /metrics.
fn enrolling(body: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(r#"fleetsim_devices{state="enrolling"} "#))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_model_never_exceeds_max_in_flight() {
    let text = "name: closed\nduration: 4s\ntarget:\n  embedded:\n    ca:\n      latency: {p50: 100ms, p99: 150ms}\n\
         fleet:\n  devices: 15\n  arrival:\n    max_in_flight: 3\ntelemetry:\n  interval: 1s\n";
    let scenario = fleetsim::scenario::parse(text, Path::new("closed.yaml")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let options = RunOptions {
        metrics_listener: Some(Arc::new(listener)),
        ..RunOptions::default()
    };
    let run = tokio::spawn(async move {
        fleet::run(&scenario, &options, std::future::pending())
            .await
            .map(|o| o.report)
    });
    // Sample the recorder's enrolling gauge from outside, as Prometheus would, all run long.
    let http = reqwest::Client::new();
    let mut samples = Vec::new();
    while !run.is_finished() {
        if let Ok(response) = http.get(&url).send().await
            && let Ok(body) = response.text().await
            && let Some(n) = enrolling(&body)
        {
            samples.push(n);
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let report = run.await.unwrap().expect("run completes");
    let d = &report.devices;
    assert_eq!((d.started, d.enrolled, d.failed), (15, 15, 0), "{d:?}");
    assert_eq!(d.late, 0, "the closed model has no slots to be late for");
    assert!(samples.len() >= 20, "only {} samples", samples.len());
    let most = samples.iter().copied().fold(0.0, f64::max);
    assert!(most <= 3.0, "{most} devices enrolling at once");
    assert!(
        most >= 2.0,
        "the fleet never had several devices enrolling: {samples:?}"
    );
}

#[test]
fn bad_arrivals_name_the_line_and_column() {
    let parse = |fleet: &str| {
        let text = format!(
            "name: a\nduration: 5s\ntarget:\n  embedded: {{}}\nfleet:\n  devices: 10\n{fleet}"
        );
        fleetsim::scenario::parse(&text, Path::new("a.yaml"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = parse(
        "  arrival:\n    rate: 5/s\n    stages:\n      - {hold: 10s}\n      - {ramp_to: 50/s}\n",
    );
    assert!(e.starts_with("a.yaml:11:"), "{e}");
    assert!(e.contains("ramp_to needs over"), "{e}");
    let e = parse("  arrival_rate: 5/s\n  arrival: {rate: 5/s}\n");
    assert!(e.starts_with("a.yaml:8:"), "{e}");
    assert!(e.contains("not both"), "{e}");
    let e = parse("  arrival: {stages: [{hold: 1s}]}\n");
    assert!(e.contains("need a starting rate"), "{e}");
    let e = parse("  id_pattern: \"d{index}\"\n");
    assert!(e.starts_with("a.yaml:5:1:"), "{e}");
    assert!(e.contains("fleet needs arrival_rate"), "{e}");
    let e = parse("  arrival: {max_in_flight: 0}\n");
    assert!(e.starts_with("a.yaml:7:"), "{e}");
}
