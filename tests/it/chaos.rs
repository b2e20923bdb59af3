//! Chaos: scenarios/chaos.yaml injects every fault kind into the embedded emulators (connections
//! dropped, PUBACKs delayed, CONNECTs refused with CONNACK 3, the hub restarted with its state
//! kept, the CA answering 503). The devices recover with backoff, every fault is in the report
//! with its time, and the QoS 1 accounting adds up: sent = acked + lost per cause, 0 unaccounted.

use std::path::Path;
use std::time::Duration;

use fleetsim::fleet::{RunOptions, run};
use fleetsim::scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_scenario_recovers_with_every_qos1_message_accounted_for() {
    let text = std::fs::read_to_string("scenarios/chaos.yaml").expect("chaos.yaml reads");
    let s = crate::common::scenario(&text, "scenarios/chaos.yaml");
    let outcome = tokio::time::timeout(
        Duration::from_secs(55),
        run(&s, &RunOptions::default(), std::future::pending()),
    )
    .await
    .expect("the chaos run ends by itself")
    .expect("the chaos run");
    let r = &outcome.report;
    let text = r.to_text();

    let kinds: Vec<&str> = r.faults.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "drop_connections",
            "delay_pubacks",
            "drop_connections",
            "ca_unavailable",
            "refuse_connects",
            "drop_connections",
            "restart_hub"
        ],
        "{text}"
    );
    assert!((3.5..6.0).contains(&r.faults[0].at_seconds), "{text}");
    assert!(r.faults[0].detail.starts_with("closed "), "{text}");
    assert_eq!(r.faults[6].lasting_seconds, Some(2.0), "{text}");

    // Every fault bit: connections were lost with messages in flight or between them and
    // reconnected, CONNECTs were refused, renewals met 503s.
    let hub = outcome.hub.as_ref().unwrap().stats();
    assert!(hub.drops >= 15, "dropped and restarted connections: {text}");
    assert!(hub.refused > 0, "CONNACK 3 while refusing: {text}");
    assert!(
        r.errors.keys().any(|k| k == "mqtt.reconnect/connack_3"),
        "{text}"
    );
    let ca_503 = r.retries.iter().any(|(k, _)| k.ends_with("http_503"))
        || r.errors.keys().any(|k| k.ends_with("http_503"));
    assert!(ca_503, "the CA's 503s were seen: {text}");
    let mqtt_reconnect_ok = r
        .phases
        .iter()
        .find(|p| p.phase == "mqtt.reconnect" && p.outcome == "ok")
        .map_or(0, |p| p.latency.count);
    assert!(mqtt_reconnect_ok >= 15, "devices reconnected: {text}");

    // Nobody gave up, and the QoS 1 books balance.
    assert_eq!(r.devices.failed, 0, "{text}");
    let q = r.qos1.as_ref().expect("QoS 1 accounting");
    assert_eq!(q.unaccounted, 0, "{text}");
    assert_eq!(q.sent, q.acked + q.lost_total(), "{text}");
    assert_eq!(q.sent, r.messages.sent, "every message is QoS 1: {text}");
    assert_eq!(q.acked_not_received, Some(0), "{text}");
    assert!(q.acked > 500, "{text}");
    // Connections dropped while PUBACKs were held back had messages in flight.
    assert!(
        q.lost.get("connection_lost").is_some_and(|n| *n > 0),
        "{text}"
    );
    assert!(r.thresholds.iter().all(|t| t.pass), "{text}");
    assert!(text.contains("faults:\n"), "{text}");
    assert!(text.contains("QoS 1: "), "{text}");
}

#[test]
fn a_fault_against_a_remote_target_is_refused_where_it_is_written() {
    let text = "name: a\nduration: 30s\ntarget:\n  remote:\n    ezca: {url: \"https://portal.ezca.io/\"}\n    \
        iothub: {host: h.azure-devices.net}\nfleet: {devices: 1, arrival_rate: 1/s}\nfaults:\n  \
        - {at: 5s, restart_hub: 2s}\n";
    let err = scenario::parse(text, Path::new("f.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("f.yaml:9:5: faults apply to the embedded target only"),
        "{err}"
    );
}
