//! The CA emulator's capacity model end to end: a burst over the issuance rate queues, then gets
//! 429s with Retry-After, injected 503s are retried, and every device still enrols.

use std::path::Path;

use fleetsim::fleet::{self, RunOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_capacity_queues_throttles_and_still_enrols_everyone() {
    // 80 arrivals at 160/s against 20 issuances a second: even if a loaded machine spreads the
    // arrivals over 2 s instead of 0.5 s, they come twice as fast as the CA issues (at 40/s
    // they did not always, and nothing was throttled).
    let text = "name: burst\nduration: 12s\ntarget:\n  embedded:\n    ca:\n      issuance_rate: 20/s\n      queue: 200ms\n      concurrency: 4\n      latency: {p50: 5ms, p99: 40ms}\n      error_rate: 5%\nfleet:\n  devices: 80\n  arrival_rate: 160/s\ntelemetry:\n  interval: 5s\n";
    let scenario = fleetsim::scenario::parse(text, Path::new("burst.yaml")).unwrap();
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    let r = &outcome.report;
    assert_eq!(r.devices.enrolled, 80, "{:?}", r.errors);
    assert_eq!(r.devices.failed, 0);
    let count = |outcome: &str| {
        r.phases
            .iter()
            .filter(|p| p.phase == "ca.issue" && p.outcome == outcome)
            .map(|p| p.latency.count)
            .sum::<u64>()
    };
    assert_eq!(count("ok"), 80);
    assert!(
        count("throttled") > 0,
        "the burst was throttled: {:?}",
        r.errors
    );
    assert!(r.errors.get("ca.issue/http_429").copied().unwrap_or(0) > 0);
    let issue_ok = r
        .phases
        .iter()
        .find(|p| p.phase == "ca.issue" && p.outcome == "ok")
        .unwrap();
    assert!(
        issue_ok.latency.p90_ms >= 50.0,
        "queueing shows in ca.issue latency: p90 {} ms",
        issue_ok.latency.p90_ms
    );
}

/// EZCA's official clients retry 408/5xx by themselves (2/4/8 s); fleetsim's client does the
/// same with the scenario's delays, and every retry is counted in the report, so a CA that only
/// succeeds on a second try is visible. With `client_retry: []` the device's own backoff takes
/// over and each 503 is an error of the phase instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retries_of_503s_are_counted_and_can_be_turned_off() {
    // Both cases run at once, with few devices: 400 devices in 8 s (as this test once ran, to
    // make a device's unlucky streak rare) are CPU-bound, and on a loaded 2-core machine only 246
    // had enrolled when the run ended. So the case without client retries no longer asks every
    // device to enrol (at 20% errors, a device's own backoff, 0.5 s doubling with full jitter,
    // outlasts the run about once in 3,000): it asks that no device gave up and that devices
    // tried again after 503s (more tries than devices, with no client retries), which holds
    // in every run that meets a 503 (all but one in 600,000: 0.8⁶⁰).
    let (with, without) = tokio::join!(
        retry_run("[50ms, 100ms, 200ms]", "30%", 40),
        retry_run("[]", "20%", 60)
    );

    // With client retries, every device enrols (a device's own try fails only when all four of
    // the client's do, 0.3⁴) and the retries are counted.
    assert_eq!(with.devices.enrolled, 40, "{:?}", with.errors);
    assert!(ezca_503_retries(&with) > 0, "retries {:?}", with.retries);
    assert!(
        with.to_text().contains("client retries"),
        "the text report lists them"
    );

    // Without, the client never retries, each 503 reaches the device and its own backoff tries
    // again.
    let r = &without;
    assert_eq!(ezca_503_retries(r), 0, "{:?}", r.retries);
    let issue_503s = r.errors.get("ca.issue/http_503").copied().unwrap_or(0);
    assert!(issue_503s > 0, "503s reach the device: {:?}", r.errors);
    assert_eq!(r.devices.failed, 0, "no device gave up: {:?}", r.errors);
    let tries = |outcome: &str| {
        r.phases
            .iter()
            .filter(|p| p.phase == "ca.issue" && p.outcome == outcome)
            .map(|p| p.latency.count)
            .sum::<u64>()
    };
    assert_eq!(tries("ok"), r.devices.enrolled);
    assert_eq!(tries("error"), issue_503s, "{:?}", r.phases);
    assert!(
        tries("ok") + tries("error") > 60,
        "devices tried again after a 503: {} ok + {issue_503s} 503s for 60 devices",
        tries("ok")
    );
}

/// A run of `devices` against a CA that fails `error_rate` of its issuances with 503, its
/// client retrying after `retry`.
async fn retry_run(retry: &str, error_rate: &str, devices: u32) -> fleetsim::report::Report {
    let text = format!(
        "name: retries\nduration: 8s\ntarget:\n  embedded:\n    ca:\n      error_rate: {error_rate}\n      client_retry: {retry}\nfleet:\n  devices: {devices}\n  arrival_rate: 200/s\ntelemetry:\n  interval: 5s\n"
    );
    let scenario = fleetsim::scenario::parse(&text, Path::new("retries.yaml")).unwrap();
    fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .unwrap()
        .report
}

/// The client's retries of EZCA's 503s, over all its endpoints.
fn ezca_503_retries(r: &fleetsim::report::Report) -> u64 {
    r.retries
        .iter()
        .filter(|(k, _)| k.starts_with("ezca/") && k.ends_with("/http_503"))
        .map(|(_, n)| n)
        .sum()
}
