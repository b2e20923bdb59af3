//! fleetsim as the operator, end to end against the embedded hub: a scenario's `method`,
//! `desired` and `query` events drive the fleet through the service API, the devices answer as
//! their `behaviour` says, and the report, the devices and the hub agree on what happened.

use std::path::Path;

use fleetsim::fleet::{self, RunOptions, RunOutcome};
use fleetsim::metrics::{Outcome, Phase};

async fn run(text: &str) -> RunOutcome {
    let scenario = fleetsim::scenario::parse(text, Path::new("operator.yaml")).expect("parses");
    fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes")
}

fn count(outcome: &RunOutcome, phase: Phase, result: Outcome) -> u64 {
    outcome
        .report
        .phases
        .iter()
        .find(|p| p.phase == phase.name() && p.outcome == result.name())
        .map_or(0, |p| p.latency.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_a_desired_patch_and_queries_drive_the_fleet() {
    let outcome = run(r#"
name: operator
seed: 3
duration: 12s
target:
  embedded: {}
fleet:
  devices: 20
  id_pattern: "op-{index:02}"
  arrival_rate: 40/s
  registration: bulk
telemetry:
  interval: 3s
  qos: 1
behaviour:
  reported: {firmwareVersion: "2.0", bootCount: "{connects}"}
  methods:
    reboot: {status: 200, payload: {device: "{device_id}"}, think: {min: 5ms, max: 50ms}, effect: reconnect, downtime: 300ms}
  desired:
    telemetryInterval: set_interval
events:
  - at: 1500ms
    query: {text: "SELECT COUNT() AS n FROM devices WHERE connectionState = 'Connected'", every: 2s}
  - at: 2s
    method: {name: reboot, devices: 100%, rate: 100/s}
  - at: 5s
    desired: {patch: {telemetryInterval: 1}, devices: 50%, poll: 300ms}
thresholds:
  - messages_lost == 0
  - failed_devices == 0
"#)
    .await;
    let report = &outcome.report;
    let operator = report.operator.as_ref().expect("an operator section");
    let reboot = &operator.methods[0];
    assert_eq!((reboot.devices, reboot.ok), (20, 20), "{reboot:?}");
    assert_eq!(reboot.statuses["200"], 20);
    assert_eq!(count(&outcome, Phase::MethodInvoke, Outcome::Ok), 20);
    assert_eq!(count(&outcome, Phase::MethodDevice, Outcome::Ok), 20);
    let desired = &operator.desired[0];
    assert_eq!(
        (desired.devices, desired.acknowledged),
        (10, 10),
        "{desired:?}"
    );
    assert_eq!(count(&outcome, Phase::TwinDesired, Outcome::Ok), 10);
    let query = &operator.queries[0];
    assert!(query.runs >= 5 && query.failed == 0, "{query:?}");
    assert_eq!(query.last, Some(20), "{query:?}");
    assert!(count(&outcome, Phase::RegistryQuery, Outcome::Ok) >= 5);

    let hub = outcome.hub.as_ref().unwrap();
    let mut faster = 0;
    for d in &outcome.devices {
        assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
        assert_eq!(d.cloud.methods_answered, 1, "{}", d.id);
        assert!(d.connects >= 2, "{} rebooted", d.id);
        let twin = hub.twin(&d.id).unwrap();
        assert_eq!(
            twin.reported["bootCount"], d.connects,
            "{}: reported again after the reboot",
            d.id
        );
        if d.cloud.interval_set.is_some() {
            faster += 1;
            assert_eq!(twin.reported["telemetryInterval"]["ac"], 200);
            assert_eq!(twin.reported["telemetryInterval"]["value"], 1);
            // Every second for the last ~6 s, on top of every 3 s before.
            assert!(
                d.messages_acked >= 8,
                "{}: {} acked",
                d.id,
                d.messages_acked
            );
        }
    }
    assert_eq!(faster, 10);
    assert!(
        report.thresholds.iter().all(|t| t.pass),
        "{:?}",
        report.thresholds
    );
    let text = report.to_text();
    assert!(
        text.contains("method reboot at 2s: 20 devices: 20 ok"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_late_and_chosen_by_query() {
    // Gateways answer `slow` after 7 s (past its 5 s response timeout); sensors do not subscribe
    // to methods at all, so the hub counts them offline; `ping` goes to the devices a query
    // picks by what they reported.
    let outcome = run(r#"
name: operator-failures
seed: 8
duration: 14s
target:
  embedded: {}
fleet:
  devices: 8
  id_pattern: "of-{index}"
  arrival_rate: 40/s
  cohorts:
    - name: gateways
      share: 50%
      behaviour:
        reported: {model: gateway}
        methods:
          slow: {think: 7s}
          ping: {status: 204}
    - name: sensors
      share: 50%
      behaviour:
        reported: {model: sensor}
telemetry:
  interval: 2s
events:
  - at: 2s
    method: {name: slow, devices: 100%, response_timeout: 5s}
  - at: 3s
    method: {name: ping, query: "SELECT * FROM devices WHERE properties.reported.model = 'gateway'"}
"#)
    .await;
    let operator = outcome.report.operator.as_ref().unwrap();
    let slow = &operator.methods[0];
    assert_eq!(
        (slow.devices, slow.timeout, slow.offline),
        (8, 4, 4),
        "{slow:?}"
    );
    assert_eq!(count(&outcome, Phase::MethodInvoke, Outcome::Timeout), 4);
    assert_eq!(count(&outcome, Phase::MethodInvoke, Outcome::Offline), 4);
    let ping = &operator.methods[1];
    assert_eq!((ping.devices, ping.ok), (4, 4), "{ping:?}");
    assert_eq!(ping.statuses["204"], 4);
    assert!(outcome.report.errors.contains_key("method.invoke/offline"));
    assert!(outcome.devices.iter().all(|d| d.failure.is_none()));
}

/// The S1 scenario, shortened, with or without its limits. Without them the hub's shaping window
/// is also cut to 50 ms: on a loaded 2-core machine the 120 unpaced calls can reach the hub spread
/// out enough for a 500 ms window to absorb them all, and the test is about the refusals.
fn s1(limits: bool) -> String {
    let text = std::fs::read_to_string("scenarios/hub-commands-s1.yaml").unwrap();
    let text = text
        .replace("duration: 45s", "duration: 24s")
        .replace("devices: 300", "devices: 120")
        .replace("at: 20s", "at: 14s");
    match limits {
        true => text,
        false => text
            .replace("shaping: 500ms", "shaping: 50ms")
            .lines()
            .filter(|l| {
                !(l.starts_with("  limits:")
                    || l.starts_with("    methods:")
                    || l.starts_with("    twin_"))
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s1_hub_throttles_an_unpaced_operator_and_serves_a_paced_one() {
    let paced = run(&s1(true)).await;
    let report = &paced.report;
    let operator = report.operator.as_ref().unwrap();
    assert_eq!(operator.methods[0].ok, 120, "{:?}", operator.methods[0]);
    assert_eq!(operator.methods[0].throttled_calls, 0);
    assert_eq!(
        operator.desired[0].acknowledged, 120,
        "{:?}",
        operator.desired[0]
    );
    assert_eq!(
        operator.desired[0].throttled_calls + operator.desired[0].reads_throttled,
        0
    );
    assert!(
        report.thresholds.iter().all(|t| t.pass),
        "{:?}",
        report.thresholds
    );
    assert!(
        count(&paced, Phase::LimitMethod, Outcome::Ok) > 0,
        "the limit paced the methods"
    );

    let unpaced = run(&s1(false)).await;
    let operator = unpaced.report.operator.as_ref().unwrap();
    let throttled = operator.methods[0].throttled_calls + operator.desired[0].throttled_calls;
    assert!(throttled > 0, "{operator:?}");
    assert!(count(&unpaced, Phase::MethodInvoke, Outcome::Throttled) > 0);
    let errors = unpaced
        .report
        .thresholds
        .iter()
        .find(|t| t.threshold == "errors == 0")
        .unwrap();
    assert!(!errors.pass, "429s fail the errors threshold: {errors:?}");
    let hub = unpaced.hub.as_ref().unwrap().stats();
    assert!(hub.throttled > 0, "the hub counted its refusals: {hub:?}");
}
