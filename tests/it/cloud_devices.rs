//! Devices that answer the cloud (`behaviour`), end to end: against the embedded hub (reported
//! properties after every connect, the twin read again after a reconnect) and against a scripted
//! broker that sends what no hub would (bad input is counted, answered where IoT Hub expects an
//! answer, and never stops the device).

use std::sync::Arc;
use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::crypto::KeyKind;
use fleetsim::device::adapters::{HubBackends, HubRegistry};
use fleetsim::device::backoff::Backoff;
use fleetsim::device::behaviour::CloudBehaviour;
use fleetsim::device::{DeviceReport, DeviceSpec, RenewalPolicy, Services, run_device};
use fleetsim::iothub::mqtt::{MqttEndpoint, MqttTransport};
use fleetsim::metrics::{Outcome, Phase, Recorder};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{self, BrokerSession, ScriptedBroker};

fn behaviour(yaml: &str) -> Arc<CloudBehaviour> {
    let b: fleetsim::scenario::Behaviour = serde_saphyr::from_str(yaml).unwrap();
    Arc::new(CloudBehaviour::from_scenario(&b).unwrap())
}

fn spec(id: &str, cloud: Arc<CloudBehaviour>, telemetry: Duration) -> DeviceSpec {
    DeviceSpec {
        index: 3,
        id: id.into(),
        key_kind: KeyKind::P256,
        validity_days: 10,
        renew_fraction: 0.8,
        telemetry: fleetsim::device::messages::TelemetryPlan::every(telemetry),
        at_least_once: true,
        register: false,
        seed: 7,
        renewal: RenewalPolicy::default(),
        control: Default::default(),
        cloud: Some(cloud),
        resume: None,
    }
}

/// The device's transport, pointed at the scripted broker.
fn transport_to(broker: &ScriptedBroker) -> MqttTransport {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(broker.root.clone()).unwrap();
    let addr = broker.addr();
    let mut transport = MqttTransport::new(
        MqttEndpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            hub_host: common::HUB_HOST.into(),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            websocket: false,
        },
        roots,
    );
    transport.use_lean(common::lean_requested());
    transport
}

/// The `$rid` of a request topic.
fn rid(topic: &str) -> String {
    topic.rsplit("$rid=").next().unwrap().to_string()
}

/// Reads the device's publishes until `want` method answers and `reported` reported patches
/// (each answered 204) have arrived: answers by `$rid` (status, payload), patches in order.
async fn collect(
    s: &mut BrokerSession,
    want: usize,
    reported: usize,
) -> (
    std::collections::BTreeMap<String, (String, Value)>,
    Vec<Value>,
) {
    let (mut answers, mut patches) = (std::collections::BTreeMap::new(), Vec::new());
    while answers.len() < want || patches.len() < reported {
        let p = s.next_publish().await;
        if let Some(rest) = p.topic.strip_prefix("$iothub/methods/res/") {
            let status = rest.split('/').next().unwrap().to_string();
            let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
            answers.insert(rid(&p.topic), (status, body));
        } else if p
            .topic
            .starts_with("$iothub/twin/PATCH/properties/reported/")
        {
            patches.push(serde_json::from_slice(&p.payload).unwrap());
            let version = patches.len() + 1;
            let answer = format!(
                "$iothub/twin/res/204/?$rid={}&$version={version}",
                rid(&p.topic)
            );
            s.publish(&answer, b"").await;
        }
    }
    (answers, patches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_the_cloud_is_counted_and_the_device_carries_on() {
    let e = common::start_emulators(Clock::real()).await;
    let broker = ScriptedBroker::start().await;
    let recorder = Arc::new(Recorder::new());
    let services = Arc::new(Services::<HubBackends> {
        ca: common::ezca(&e).await,
        registry: Some(HubRegistry(common::registry(&e))),
        provisioning: None,
        transport: transport_to(&broker),
        recorder: recorder.clone(),
        backoff: Backoff::default(),
        gate: Default::default(),
        keys: fleetsim::device::keys::KeySource::fresh(),
        state: None,
    });
    let cloud = behaviour(
        "methods:\n  ping: {status: 200, payload: {pong: \"{device_id}\", n: \"{index}\"}}\n  \
         setInterval: {effect: set_interval}\ndesired: {telemetryInterval: set_interval}\n",
    );
    let stop = CancellationToken::new();
    let spec = spec("bad-input-1", cloud, Duration::from_secs(60));
    let device = tokio::spawn(run_device(spec, services, Instant::now(), stop.clone()));

    let mut s = broker.accept().await;
    let filters = s.grant_subscription().await;
    assert_eq!(
        filters,
        [
            "$iothub/methods/POST/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/twin/res/#"
        ]
    );
    let get = s.next_publish_on("$iothub/twin/GET/").await;
    let script: [(String, &[u8]); 11] = [
        (
            format!("$iothub/twin/res/200/?$rid={}", rid(&get.topic)),
            b"not json",
        ),
        ("$iothub/methods/POST/ping/?".into(), b"{}"),
        ("$iothub/methods/POST/ping/?$rid=7".into(), b"{not json"),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=2".into(),
            b"[1,2",
        ),
        (
            "$iothub/twin/PATCH/properties/desired/".into(),
            br#"{"telemetryInterval":5}"#,
        ),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=3".into(),
            br#"{"telemetryInterval":"soon"}"#,
        ),
        ("somewhere/else".into(), b"x"),
        (
            "$iothub/methods/POST/setInterval/?$rid=8".into(),
            br#""fast""#,
        ),
        ("$iothub/methods/POST/unknown/?$rid=9".into(), b"null"),
        ("$iothub/methods/POST/ping/?$rid=10".into(), b"{}"),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=4".into(),
            br#"{"telemetryInterval":2,"$version":4}"#,
        ),
    ];
    for (topic, payload) in &script {
        s.publish(topic, payload).await;
    }
    let (answers, patches) = collect(&mut s, 4, 2).await;
    assert_eq!(answers["7"].0, "400", "a payload that is not JSON");
    assert_eq!(answers["8"].0, "400", "an interval that is not one");
    assert_eq!(answers["9"].0, "404", "an unknown method");
    assert_eq!(
        answers["10"],
        ("200".into(), json!({"pong": "bad-input-1", "n": 3}))
    );
    assert_eq!(patches[0]["telemetryInterval"]["ac"], 400);
    assert_eq!(patches[0]["telemetryInterval"]["av"], 3);
    assert_eq!(
        patches[1]["telemetryInterval"],
        json!({"value": 2, "ac": 200, "av": 4, "ad": "applied"})
    );

    // The new interval is live: telemetry every 2 s instead of every 60 s.
    let first = s
        .next_publish_on("devices/bad-input-1/messages/events/")
        .await;
    let t0 = Instant::now();
    let _ = first;
    s.next_publish_on("devices/bad-input-1/messages/events/")
        .await;
    let gap = t0.elapsed();
    assert!(
        gap > Duration::from_millis(1500) && gap < Duration::from_secs(3),
        "{gap:?}"
    );

    stop.cancel();
    let report: DeviceReport = device.await.unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.cloud.malformed, 9, "{:?}", report.cloud);
    assert_eq!(report.cloud.methods_answered, 4);
    assert_eq!(report.cloud.desired_applied, 1);
    assert_eq!(report.cloud.reported_accepted, 2);
    assert_eq!(report.cloud.interval_set, Some(Duration::from_secs(2)));
    let errors = recorder.snapshot().errors;
    for (key, n) in [
        ("twin.desired/malformed_twin", 1),
        ("method.device/unknown_topic", 2),
        ("method.device/malformed_payload", 1),
        ("twin.desired/malformed_patch", 1),
        ("twin.desired/no_version", 1),
        ("twin.desired/bad_value", 1),
        ("method.device/bad_value", 1),
        ("method.device/unknown_method", 1),
    ] {
        assert_eq!(errors.get(key), Some(&n), "{key}: {errors:?}");
    }
    let snapshot = recorder.snapshot();
    assert_eq!(snapshot.count(Phase::MethodDevice, Outcome::Ok), 4);
    assert_eq!(snapshot.count(Phase::TwinReported, Outcome::Ok), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reconnect_the_device_subscribes_and_reads_its_twin_again() {
    let e = common::start_emulators(Clock::real()).await;
    let broker = ScriptedBroker::start().await;
    let services = Arc::new(Services::<HubBackends> {
        ca: common::ezca(&e).await,
        registry: Some(HubRegistry(common::registry(&e))),
        provisioning: None,
        transport: transport_to(&broker),
        recorder: Arc::new(Recorder::new()),
        backoff: Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(200),
            max_attempts: 5,
        },
        gate: Default::default(),
        keys: fleetsim::device::keys::KeySource::fresh(),
        state: None,
    });
    let cloud = behaviour(
        "desired: {telemetryInterval: set_interval}\nreported: {boots: \"{connects}\"}\n",
    );
    let stop = CancellationToken::new();
    let spec = spec("again-1", cloud, Duration::from_secs(60));
    let device = tokio::spawn(run_device(spec, services, Instant::now(), stop.clone()));
    for connect in 1..=2u64 {
        let mut s = broker.accept().await;
        let filters = s.grant_subscription().await;
        assert_eq!(filters.len(), 2, "connect {connect}: {filters:?}");
        s.next_publish_on("$iothub/twin/GET/").await;
        let reported = s
            .next_publish_on("$iothub/twin/PATCH/properties/reported/")
            .await;
        let patch: Value = serde_json::from_slice(&reported.payload).unwrap();
        assert_eq!(patch, json!({"boots": connect}));
        // Dropping the session closes the connection: the device reconnects.
    }
    stop.cancel();
    let report = device.await.unwrap();
    assert_eq!(report.connects, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_hub_holds_what_devices_report_after_each_connect() {
    // A scenario day is a second: 4-day certificates renew at 3.2 s and the devices reconnect
    // with the new one, reporting again.
    let text = r#"
name: reported
seed: 4
duration: 6s
time_scale: 1s
target:
  embedded: {}
fleet:
  devices: 6
  id_pattern: "rep-{index}"
  arrival_rate: 30/s
certificate:
  key: p256
  validity_days: 4
telemetry:
  interval: 1s
behaviour:
  reported:
    firmwareVersion: "1.4.{index}"
    bootCount: "{connects}"
"#;
    let scenario = fleetsim::scenario::parse(text, std::path::Path::new("reported.yaml")).unwrap();
    let outcome = fleetsim::fleet::run(&scenario, &Default::default(), std::future::pending())
        .await
        .unwrap();
    let hub = outcome.hub.as_ref().unwrap();
    let mut reports = 0;
    for (i, d) in outcome.devices.iter().enumerate() {
        assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
        assert!(d.connects >= 2, "{} renewed and reconnected", d.id);
        let twin = hub.twin(&d.id).expect("a twin");
        let index = d.id.trim_start_matches("rep-");
        assert_eq!(
            twin.reported["firmwareVersion"],
            format!("1.4.{index}"),
            "{i}"
        );
        assert_eq!(twin.reported["bootCount"], d.connects, "{}", d.id);
        reports += d.cloud.reported_accepted;
        assert_eq!(d.cloud.reported_accepted, d.connects);
    }
    let reported = outcome
        .report
        .phases
        .iter()
        .find(|p| p.phase == "twin.reported" && p.outcome == "ok")
        .expect("twin.reported in the report");
    assert_eq!(reported.latency.count, reports);
}
