//! fleetsim as its fleet's backend and as the C2D operator, end to end against the embedded hub:
//! a run with `backend.consume` reads every acknowledged message from the Event Hub-compatible
//! endpoint (none lost, none duplicated, `d2c.delivery` timed), and a `c2d` event's messages are
//! settled by the hub, counted by outcome and received by the devices (`c2d.delivery`).

use std::path::Path;

use fleetsim::fleet::{self, RunOptions, RunOutcome};
use fleetsim::metrics::{Outcome, Phase};

async fn run(text: &str) -> RunOutcome {
    let scenario = fleetsim::scenario::parse(text, Path::new("backend.yaml")).expect("parses");
    fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes")
}

fn phase(
    outcome: &RunOutcome,
    phase: Phase,
    result: Outcome,
) -> Option<&fleetsim::report::PhaseStats> {
    outcome
        .report
        .phases
        .iter()
        .find(|p| p.phase == phase.name() && p.outcome == result.name())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_reads_every_acknowledged_message_and_c2d_is_settled() {
    let outcome = run(r#"
name: backend
seed: 5
duration: 8s
target:
  embedded: {}
fleet:
  devices: 20
  id_pattern: "be-{index:02}"
  arrival_rate: 40/s
  registration: bulk
telemetry:
  interval: 1s
  qos: 1
behaviour:
  subscriptions: [c2d]
backend:
  consume: true
  consumer_group: fleetsim
events:
  - at: 3s
    c2d: {body: {command: blink, device: "{deviceId}"}, properties: {kind: command}, devices: 50%, rate: 100/s, expiry: 1m}
thresholds:
  - messages_lost == 0
"#)
    .await;
    let report = &outcome.report;
    let backend = report.backend.as_ref().expect("a backend section");
    let t = &backend.totals;
    assert_eq!(backend.consumer_group, "fleetsim");
    assert_eq!(backend.partitions, 4);
    assert!(t.acked >= 100, "{backend:?}");
    assert_eq!(t.acked, report.messages.acked, "{backend:?}");
    assert_eq!((t.lost, t.duplicated), (0, 0), "{backend:?}");
    assert_eq!(t.devices, 20);
    let d2c = phase(&outcome, Phase::D2cDelivery, Outcome::Ok).expect("d2c.delivery");
    assert_eq!(
        d2c.latency.count, t.received,
        "one latency per message read"
    );
    assert!(d2c.latency.p99_ms < 5_000.0, "{:?}", d2c.latency);
    let text = report.to_text();
    assert!(text.contains("backend:"), "{text}");
    assert!(text.contains("0 lost, 0 duplicated"), "{text}");

    let c2d = &report.operator.as_ref().expect("an operator section").c2d[0];
    assert_eq!(c2d.devices, 10, "{c2d:?}");
    assert_eq!(c2d.accepted, 10, "{c2d:?}");
    assert_eq!(
        phase(&outcome, Phase::C2dSend, Outcome::Ok).map(|p| p.latency.count),
        Some(10)
    );
    assert!(
        text.contains("c2d at 3s: 10 devices: 10 accepted"),
        "{text}"
    );
    // The devices received them: fleetsim-sent-at → the device, timed on the device.
    assert_eq!(
        phase(&outcome, Phase::C2dDelivery, Outcome::Ok).map(|p| p.latency.count),
        Some(10),
        "{text}"
    );
}
