//! Fleets provisioned through DPS (`fleet.provisioning: dps`): devices spread over two hubs by
//! hashed allocation and all connected, each hub receiving exactly what its devices sent;
//! static allocation on one hub; devices answering the cloud on the hub DPS assigned (and the
//! operator reaching them on one hub); a device provisioning again when its hub refuses it; DPS's
//! throttle answered by sending again after `retry-after`; a disabled enrolment counted as a
//! refusal, not a panic; and the scenario's rules with file, line and column. A remote run
//! against `fleetsim emulate`'s DPS is in `dps_remote`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::device::adapters::HubBackends;
use fleetsim::device::backoff::Backoff;
use fleetsim::device::{DeviceReport, DeviceSpec, RenewalPolicy, Services, run_device};
use fleetsim::emulator::Emulators;
use fleetsim::emulator::dps::enrollment::EnrollmentGroup;
use fleetsim::fleet::{self, RunOptions, RunOutcome};
use fleetsim::metrics::{Outcome, Phase, Recorder};
use fleetsim::scenario::{DpsAllocation, EmbeddedDps};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common;

async fn run(text: &str) -> RunOutcome {
    let scenario = common::scenario(text, "dps-fleet.yaml");
    let options = RunOptions::default();
    let run = fleet::run(&scenario, &options, std::future::pending());
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the run ends by itself")
        .expect("run")
}

/// A DPS fleet of `devices` over `dps` (a flow mapping), with quick DPS timings.
fn scenario(devices: u32, dps: &str) -> String {
    format!(
        r#"
name: dps-fleet
seed: 14
duration: 7s
target:
  embedded:
    dps: {{retry_after: 1s, assignment_delay: 100ms, {dps}}}
fleet:
  devices: {devices}
  id_pattern: "dps-{{index:03}}"
  arrival_rate: 100/s
  provisioning: dps
certificate:
  key: p256
  key_source: fresh
telemetry:
  interval: 500ms
  qos: 1
thresholds:
  - failed_devices == 0
  - messages_lost == 0
"#
    )
}

/// Each hub received exactly what the devices DPS placed there sent.
fn assert_hubs_received_what_their_devices_sent(outcome: &RunOutcome) {
    let hubs: Vec<_> = outcome.hub.iter().chain(&outcome.extra_hubs).collect();
    for hub in &hubs {
        let sent: u64 = outcome
            .devices
            .iter()
            .filter(|d| d.assigned_hub.as_deref() == Some(hub.host_name()))
            .map(|d| d.messages_sent)
            .sum();
        assert_eq!(hub.stats().messages, sent, "{}", hub.host_name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_provisioned_through_dps_spreads_over_two_hubs() {
    let outcome = run(&scenario(40, "hubs: 2, allocation: hashed")).await;
    let r = &outcome.report;
    assert_eq!(r.devices.connected, 40, "{}", r.to_text());
    assert_eq!(r.devices.failed, 0);
    assert!(r.thresholds.iter().all(|t| t.pass), "{:?}", r.thresholds);
    // DPS created the identities: fleetsim registered none itself.
    assert!(r.phases.iter().all(|p| p.phase != "hub.register"));
    let dps_ok = r
        .phases
        .iter()
        .find(|p| p.phase == "dps.register" && p.outcome == "ok")
        .expect("dps.register is measured");
    assert_eq!(dps_ok.latency.count, 40);

    let p = r.provisioning.as_ref().expect("a provisioning section");
    assert_eq!((p.provisioned, p.reprovisioned), (40, 0));
    assert!(p.polls >= 40, "every device polled at least once");
    assert_eq!(p.hubs.len(), 2);
    assert!(p.hubs.iter().all(|h| h.devices > 0), "{:?}", p.hubs);
    assert_eq!(p.hubs.iter().map(|h| h.devices).sum::<u64>(), 40);
    for h in &p.hubs {
        let received = h.received.as_ref().expect("embedded hubs count");
        assert_eq!(received.devices_registered, h.devices, "{}", h.host);
        assert!(received.messages > 0);
    }
    let counted = p.service_counts.as_ref().expect("the embedded DPS counts");
    assert_eq!(counted.assigned, 40);
    // DPS's published limit (1,000 a minute, a second's worth at once) throttles some of the
    // 40 arriving in 0.4 s; they were sent again.
    assert_eq!(p.throttled, counted.throttled);
    assert!(counted.registrations >= 40);

    assert_eq!(outcome.extra_hubs.len(), 1);
    assert_hubs_received_what_their_devices_sent(&outcome);
    let total: u64 = p
        .hubs
        .iter()
        .map(|h| h.received.as_ref().unwrap().messages)
        .sum();
    assert_eq!(
        r.hub.as_ref().unwrap().messages,
        total,
        "hub totals add every hub"
    );
    let c = r.certificates.as_ref().unwrap();
    assert_eq!((c.swap.devices_compared, c.swap.qos1_lost), (40, 0));
    assert!(
        r.to_text()
            .contains("provisioning (dps): 40 devices provisioned")
    );
    let html = fleetsim::report::html::render(r, "").unwrap();
    assert!(html.contains("<h2>Provisioning</h2>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_allocation_places_every_device_on_the_first_hub() {
    let outcome = run(&scenario(12, "hubs: 2, allocation: static")).await;
    let r = &outcome.report;
    assert_eq!(r.devices.connected, 12, "{}", r.to_text());
    let p = r.provisioning.as_ref().unwrap();
    let first = outcome.hub.as_ref().unwrap().host_name();
    let on_first = p.hubs.iter().find(|h| h.host == first).unwrap();
    assert_eq!(on_first.devices, 12);
    let second = &outcome.extra_hubs[0];
    assert_eq!(second.stats().messages, 0);
    assert_eq!(second.stats().devices_registered, 0);
    assert_hubs_received_what_their_devices_sent(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_answer_the_cloud_on_the_hub_dps_assigned() {
    let behaviour = "behaviour:\n  reported:\n    firmwareVersion: \"2.0.{index}\"\n";
    let text = scenario(12, "hubs: 2, allocation: hashed") + behaviour;
    let outcome = run(&text).await;
    assert_eq!(outcome.report.devices.connected, 12);
    let hubs: Vec<_> = outcome.hub.iter().chain(&outcome.extra_hubs).collect();
    for d in &outcome.devices {
        let assigned = d.assigned_hub.as_deref().expect("assigned");
        for hub in &hubs {
            let twin = hub.twin(&d.id);
            if hub.host_name() == assigned {
                let twin = twin.expect("a twin in the assigned hub");
                let index = d.id.trim_start_matches("dps-").trim_start_matches('0');
                let index = if index.is_empty() { "0" } else { index };
                assert_eq!(twin.reported["firmwareVersion"], format!("2.0.{index}"));
            } else {
                assert!(
                    twin.is_none(),
                    "{} has no twin in {}",
                    d.id,
                    hub.host_name()
                );
            }
        }
        assert_eq!(d.cloud.reported_accepted, d.connects, "{}", d.id);
    }

    // On one hub, fleetsim as the operator reaches every device DPS placed.
    let method =
        "events:\n  - at: 3s\n    method: {name: ping, devices: 100%, response_timeout: 5s}\n";
    let answers = "behaviour:\n  methods:\n    ping: {status: 200}\n";
    let text = scenario(6, "hubs: 1") + answers + method;
    let outcome = run(&text).await;
    let operator = outcome
        .report
        .operator
        .as_ref()
        .expect("an operator section");
    let ping = &operator.methods[0];
    assert_eq!((ping.devices, ping.ok), (6, 6), "{ping:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_registrations_are_sent_again_after_retry_after() {
    // DPS admits two registrations a second; twelve devices arrive at once. The last is admitted
    // ~5 s in and connects a poll (1 s) later, which a 7 s run did not always leave room for on
    // a loaded machine: the run is stopped once all twelve are online instead.
    let text =
        scenario(12, "hubs: 2, registration_rate: 2/s").replace("duration: 7s", "duration: 5m");
    let scenario = fleetsim::scenario::parse(&text, Path::new("dps-fleet.yaml")).expect("parses");
    let (listener, addr) = common::metrics_listener();
    let options = RunOptions {
        metrics_listener: Some(listener),
        ..RunOptions::default()
    };
    let online = common::until_metrics(addr, Duration::from_secs(60), |value| {
        value(r#"fleetsim_devices{state="online"}"#) == 12.0
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(90),
        fleet::run(&scenario, &options, online),
    )
    .await
    .expect("the run ends once all are online")
    .expect("run");
    let r = &outcome.report;
    assert!(r.interrupted, "stopped by the test, not by its duration");
    assert_eq!(r.devices.connected, 12, "{}", r.to_text());
    assert_eq!(r.devices.failed, 0);
    let p = r.provisioning.as_ref().unwrap();
    let counted = p.service_counts.as_ref().unwrap();
    assert!(counted.throttled > 0, "{counted:?}");
    assert_eq!(p.throttled, counted.throttled, "every 429 was sent again");
    assert_eq!(counted.assigned, 12);
    assert_eq!(
        r.retries.get("dps/iotdps-register/throttled"),
        Some(&p.throttled)
    );
}

/// DPS with one hub (whose registry REST API a test can use) and static allocation, started
/// as an embedded run starts it, and the services of a DPS run over it.
async fn dps_services(recorder: &Arc<Recorder>) -> (Emulators, Arc<Services<HubBackends>>) {
    let mut e = common::start_emulators(Clock::real()).await;
    let dps = EmbeddedDps {
        hubs: 1,
        allocation: DpsAllocation::Static,
        retry_after: fleetsim::scenario::Span(Duration::from_secs(1)),
        assignment_delay: fleetsim::scenario::Span(Duration::from_millis(100)),
        ..EmbeddedDps::default()
    };
    let hub = fleetsim::emulator::HubConfig {
        host_name: common::HUB_HOST.into(),
        ..Default::default()
    };
    fleet::dps::start_embedded(&mut e, &dps, &hub, &[], [127, 0, 0, 1].into())
        .await
        .expect("DPS starts");
    let mut transport = common::transport(&e);
    fleet::dps::route_hubs(&mut transport, &e, vec![e.hub_mqtt_addr]);
    let services = Services::<HubBackends> {
        ca: common::ezca(&e).await,
        registry: None,
        provisioning: Some(fleet::dps::embedded_client(&e, false).expect("client")),
        transport,
        recorder: recorder.clone(),
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
            max_attempts: 4,
        },
        gate: Default::default(),
        keys: fleetsim::device::keys::KeySource::fresh(),
        state: None,
    };
    (e, Arc::new(services))
}

fn spec(id: &str) -> DeviceSpec {
    DeviceSpec {
        index: 0,
        id: id.into(),
        key_kind: fleetsim::crypto::KeyKind::P256,
        validity_days: 10,
        renew_fraction: 0.8,
        telemetry: fleetsim::device::messages::TelemetryPlan::every(Duration::from_millis(300)),
        at_least_once: true,
        register: true,
        seed: 1,
        renewal: RenewalPolicy::default(),
        control: Default::default(),
        resume: None,
        cloud: None,
    }
}

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_provisions_again_when_its_hub_refuses_it() {
    let recorder = Arc::new(Recorder::new());
    let (e, services) = dps_services(&recorder).await;
    let stop = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let device = tokio::spawn(run_device(
        spec("reprov-1"),
        services.clone(),
        start,
        stop.child_token(),
    ));
    until("the device is connected", || e.hub.is_connected("reprov-1")).await;
    // The hub forgets the device: its connection is dropped and its reconnect refused
    // (CONNACK 5, not authorized), so it registers with DPS again, which creates it anew.
    common::registry(&e)
        .delete("reprov-1", None)
        .await
        .expect("deleted");
    until("the device is back", || {
        e.hub.device("reprov-1").is_some() && e.hub.is_connected("reprov-1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.cancel();
    let report: DeviceReport = device.await.unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.provisioned, 2, "{report:?}");
    assert_eq!(report.assigned_hub.as_deref(), Some(common::HUB_HOST));
    assert!(report.connects >= 2);
    let dps = &e.dps.as_ref().unwrap().emulator;
    assert_eq!(dps.stats().assigned, 2);
    let snapshot = recorder.snapshot();
    assert_eq!(snapshot.count(Phase::DpsRegister, Outcome::Ok), 2);
    assert!(
        snapshot
            .errors
            .keys()
            .any(|k| k.starts_with("mqtt.reconnect/connack_5")),
        "{:?}",
        snapshot.errors
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_enrolment_is_a_counted_refusal() {
    let recorder = Arc::new(Recorder::new());
    let (e, services) = dps_services(&recorder).await;
    let dps = &e.dps.as_ref().unwrap().emulator;
    let disabled: EnrollmentGroup = serde_json::from_value(json!({
        "enrollmentGroupId": fleet::dps::ENROLLMENT_GROUP,
        "attestation": {"type": "x509", "x509": {"caReferences":
            {"primary": fleetsim::emulator::EZCA_ROOT_CERTIFICATE}}},
        "provisioningStatus": "disabled",
    }))
    .unwrap();
    dps.put_enrollment_group(disabled).expect("replaced");
    let stop = CancellationToken::new();
    let run = run_device(spec("off-1"), services, tokio::time::Instant::now(), stop);
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("a refused device stops by itself");
    let failure = report.failure.expect("the device failed");
    assert!(failure.starts_with("dps.register"), "{failure}");
    assert!(!report.connected && report.provisioned == 0);
    let snapshot = recorder.snapshot();
    assert_eq!(snapshot.count(Phase::DpsRegister, Outcome::Rejected), 1);
    assert_eq!(snapshot.errors.get("dps.register/disabled"), Some(&1));
    assert_eq!(dps.stats().disabled, 1);
    assert!(e.hub.device("off-1").is_none());
    e.shutdown().await;
}

/// The message of the scenario error for `text`.
fn invalid(text: &str) -> String {
    match fleetsim::scenario::parse(text, Path::new("dps.yaml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn scenario_rules_name_file_line_and_column() {
    let head = "name: v\nduration: 10s\n";
    let fleet = |extra: &str| format!("fleet:\n  devices: 2\n  arrival_rate: 1/s\n{extra}");
    let err = invalid(&format!(
        "{head}target:\n  embedded: {{}}\n{}",
        fleet("  provisioning: dps\n")
    ));
    assert!(err.starts_with("dps.yaml:8:17:"), "{err}");
    assert!(err.contains("needs a DPS in the target"), "{err}");

    let err = invalid(&format!(
        "{head}target:\n  embedded:\n    dps: {{hubs: 2}}\n{}",
        fleet("")
    ));
    assert!(err.starts_with("dps.yaml:5:10:"), "{err}");
    assert!(err.contains("fleet.provisioning is registry"), "{err}");

    let dps_target = "target:\n  embedded:\n    dps: {hubs: 0}\n";
    let err = invalid(&format!(
        "{head}{dps_target}{}",
        fleet("  provisioning: dps\n")
    ));
    assert!(
        err.starts_with("dps.yaml:5:10:") && err.contains("dps.hubs is 0"),
        "{err}"
    );

    let two = "target:\n  embedded:\n    dps: {hubs: 2}\n";
    let err = invalid(&format!(
        "{head}{two}{}",
        fleet("  provisioning: dps\n  registration: bulk\n")
    ));
    assert!(err.contains("bulk does not apply"), "{err}");
    let err = invalid(&format!(
        "{head}{two}{}",
        fleet("  provisioning: dps\n  transport: websocket\n")
    ));
    assert!(err.contains("MQTT over TLS only"), "{err}");
    let err = invalid(&format!(
        "{head}target:\n  embedded:\n    dps: {{allocation: geo}}\n{}",
        fleet("  provisioning: dps\n")
    ));
    assert!(
        err.contains("dps.yaml:5:") && err.contains("hashed"),
        "{err}"
    );

    // The operator reaches one hub: operator events want one hub in an embedded DPS run.
    let query = "events:\n  - at: 1s\n    query: {text: \"SELECT * FROM devices\"}\n";
    let err = invalid(&format!(
        "{head}{two}{}{query}",
        fleet("  provisioning: dps\n")
    ));
    assert!(
        err.starts_with("dps.yaml:11:5:") && err.contains("set dps.hubs: 1"),
        "{err}"
    );
    let one = "target:\n  embedded:\n    dps: {hubs: 1}\n";
    let ok = format!("{head}{one}{}{query}", fleet("  provisioning: dps\n"));
    fleetsim::scenario::parse(&ok, Path::new("ok.yaml")).expect("one hub: valid");

    let remote =
        "target:\n  remote:\n    ezca: {url: 'https://ezca.example/'}\n    dps: {id_scope: ' '}\n";
    let err = invalid(&format!("{head}{remote}{}", fleet("  provisioning: dps\n")));
    assert!(
        err.starts_with("dps.yaml:6:10:") && err.contains("id_scope"),
        "{err}"
    );
    // A remote DPS target needs no hub block: DPS assigns the hub.
    let ok = format!(
        "{head}target:\n  remote:\n    ezca: {{url: 'https://ezca.example/'}}\n    dps: {{id_scope: 0ne00000001}}\n{}",
        fleet("  provisioning: dps\n")
    );
    let s = fleetsim::scenario::parse(&ok, Path::new("ok.yaml")).expect("valid");
    match s.target.value {
        fleetsim::scenario::Target::Remote(r) => {
            let dps = r.dps.unwrap().value;
            assert_eq!(dps.global_endpoint, "global.azure-devices-provisioning.net");
            assert_eq!(dps.mqtt_port, 8883);
        }
        _ => unreachable!(),
    }
}
