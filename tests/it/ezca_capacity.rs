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
    // Without client retries a device enrols on its own backoff alone (0.5 s doubling, full
    // jitter), and five 503s in a row outlast the 8 s run: at 30% errors one of 40 devices draws
    // that in roughly one run in ten (40 × 0.3⁵). So that case runs 400 devices at 5%: five in a
    // row happens about once in 8,000 runs (400 × 0.05⁵), and a run in which none of the 400
    // issue requests meets a 503 once in 10⁹ (0.95⁴⁰⁰). (Only ca.issue goes through the CA's
    // capacity model, so there is one chance per device.)
    for (retry, error_rate, devices, expect_retries) in [
        ("[50ms, 100ms, 200ms]", "30%", 40, true),
        ("[]", "5%", 400, false),
    ] {
        let text = format!(
            "name: retries\nduration: 8s\ntarget:\n  embedded:\n    ca:\n      error_rate: {error_rate}\n      client_retry: {retry}\nfleet:\n  devices: {devices}\n  arrival_rate: 200/s\ntelemetry:\n  interval: 5s\n"
        );
        let scenario = fleetsim::scenario::parse(&text, Path::new("retries.yaml")).unwrap();
        let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
            .await
            .unwrap();
        let r = &outcome.report;
        assert_eq!(r.devices.enrolled, devices, "{retry}: {:?}", r.errors);
        let retried: u64 = r
            .retries
            .iter()
            .filter(|(k, _)| k.starts_with("ezca/") && k.ends_with("/http_503"))
            .map(|(_, n)| n)
            .sum();
        let issue_503s = r.errors.get("ca.issue/http_503").copied().unwrap_or(0)
            + r.errors
                .get("ca.register_domain/http_503")
                .copied()
                .unwrap_or(0);
        if expect_retries {
            assert!(retried > 0, "{retry}: retries {:?}", r.retries);
            assert!(
                r.to_text().contains("client retries"),
                "the text report lists them"
            );
        } else {
            assert_eq!(retried, 0, "{retry}: {:?}", r.retries);
            assert!(
                issue_503s > 0,
                "{retry}: 503s reach the device: {:?}",
                r.errors
            );
        }
    }
}
