//! Global limits per traffic class (`fleet.limits`: connects, publishes, enrolments): a ceiling the
//! fleet stays under, with the waiting timed as its own phase rather than hidden in the service's
//! latency.

use std::path::Path;

use fleetsim::fleet::{self, RunOptions};
use fleetsim::report::{LatencyStats, Report};

fn phase<'a>(r: &'a Report, name: &str) -> Option<&'a LatencyStats> {
    r.phases
        .iter()
        .find(|p| p.phase == name && p.outcome == "ok")
        .map(|p| &p.latency)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_stays_under_its_limits_and_the_waits_are_timed() {
    let text = "name: limits\nduration: 3s\ntarget:\n  embedded: {}\nfleet:\n  devices: 10\n  arrival_rate: 100/s\n  limits: {connects: 5/s, publishes: 20/s}\ntelemetry:\n  interval: 100ms\n";
    let scenario = fleetsim::scenario::parse(text, Path::new("limits.yaml")).unwrap();
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes");
    let r = &outcome.report;
    assert_eq!(
        (r.devices.connected, r.devices.failed),
        (10, 0),
        "{:?}",
        r.errors
    );

    // Ten connects at 5/s: the last one waited about 1.8 s for its turn...
    let waits = phase(r, "limit.connect").expect("connect waits recorded");
    assert!(waits.count >= 8, "{} connects waited", waits.count);
    assert!(waits.max_ms >= 1400.0, "longest wait {} ms", waits.max_ms);
    // ...and that wait is not in the hub's connect latency.
    let connect = phase(r, "mqtt.connect").expect("connects recorded");
    assert!(
        connect.max_ms < waits.max_ms,
        "mqtt.connect max {} ms",
        connect.max_ms
    );

    // Unlimited, ten devices every 100 ms would send ~200 messages in the run; the ceiling is
    // 20/s over 3 s (plus the one message a limiter lets through at once).
    let hub = r.hub.as_ref().expect("embedded hub");
    assert!(
        hub.messages <= 62,
        "{} messages over a 20/s limit",
        hub.messages
    );
    assert!(hub.messages >= 20, "only {} messages", hub.messages);
    assert!(phase(r, "limit.publish").is_some_and(|w| w.count > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolments_stay_under_their_limit_and_the_waits_are_timed() {
    // Ten devices arrive at once, certificate requests limited to 4/s: the CA sees them spread
    // over ~2 s, and the waiting is `limit.enrolment`, not `ca.issue` latency.
    let text = "name: enrolments\nduration: 5m\ntarget:\n  embedded: {}\nfleet:\n  devices: 10\n  arrival_rate: 100/s\n  limits: {enrolments: 4/s}\ntelemetry:\n  interval: 1s\n";
    let scenario = fleetsim::scenario::parse(text, Path::new("limits.yaml")).unwrap();
    let (listener, addr) = crate::common::metrics_listener();
    let options = RunOptions {
        metrics_listener: Some(listener),
        ..RunOptions::default()
    };
    let online = crate::common::until_metrics(addr, std::time::Duration::from_secs(60), |value| {
        value(r#"fleetsim_devices{state="online"}"#) == 10.0
    });
    let outcome = fleet::run(&scenario, &options, online)
        .await
        .expect("run completes");
    let r = &outcome.report;
    assert_eq!(
        (r.devices.enrolled, r.devices.failed),
        (10, 0),
        "{:?}",
        r.errors
    );
    // Ten requests at 4/s (one passes at once): the last waited about 2.25 s for its turn, less
    // however late it arrived (arrivals this close were never late by 1 s).
    let waits = phase(r, "limit.enrolment").expect("enrolment waits recorded");
    assert!(waits.count >= 8, "{} enrolments waited", waits.count);
    assert!(waits.max_ms >= 1000.0, "longest wait {} ms", waits.max_ms);
    let issue = phase(r, "ca.issue").expect("issuances recorded");
    assert!(
        issue.max_ms < waits.max_ms,
        "ca.issue max {} ms",
        issue.max_ms
    );
    // The CA issued them no faster than the limit, however they arrived: first to last at least
    // 2.25 s apart, so at least 2 s in certificate times (whole seconds).
    let ca = outcome.ca.as_ref().expect("embedded CA");
    let mut issued: Vec<_> = ca.issued().iter().map(|c| c.not_before).collect();
    issued.sort();
    let spread = *issued.last().unwrap() - issued[0];
    assert!(
        spread >= time::Duration::seconds(2),
        "issued within {spread} (certificate times are whole seconds)"
    );
}
