//! The scenario's cloud-to-device parts as a user writes them: `behaviour` (top level and per
//! cohort) and the operator's events (`method`, `desired`, `query`) beside `revoke`. The shipped
//! scenarios load; mistakes are refused with the file, line and column and what was expected.

use std::path::Path;
use std::time::Duration;

use fleetsim::iothub::topics::Subscription;
use fleetsim::scenario::events::{Action, Selection};
use fleetsim::scenario::{self, Scenario};

const HEAD: &str =
    "name: c\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 10\n  arrival_rate: 5/s\n";

fn parse(body: &str) -> Result<Scenario, String> {
    scenario::parse(&format!("{HEAD}{body}"), Path::new("cloud.yaml")).map_err(|e| e.to_string())
}

fn refused(body: &str, at: &str, says: &str) {
    let err = match parse(body) {
        Ok(_) => panic!("accepted:\n{body}"),
        Err(e) => e,
    };
    assert!(
        err.starts_with(&format!("cloud.yaml:{at}:")),
        "{body}\n→ {err}"
    );
    assert!(err.contains(says), "{body}\n→ {err}");
}

#[test]
fn the_shipped_command_scenarios_load() {
    let s = scenario::load(Path::new("scenarios/fleet-commands.yaml")).expect("fleet-commands");
    let actions: Vec<_> = s.events.iter().filter_map(|e| e.value.action()).collect();
    assert!(
        matches!(actions[0], Action::Query(q) if q.every == Some(fleetsim::scenario::Span(Duration::from_secs(10))))
    );
    let Action::Method(reboot) = actions[1] else {
        panic!("a method event");
    };
    assert_eq!(reboot.name, "reboot");
    assert_eq!(
        reboot.devices,
        Some(Selection::Share(fleetsim::scenario::Percent(100.0)))
    );
    assert!(matches!(actions[2], Action::Desired(d) if d.patch["telemetryInterval"] == 5));
    let spec = &fleetsim::fleet::device_specs(&s)[0];
    let cloud = spec.cloud.as_ref().expect("devices answer the cloud");
    assert_eq!(
        cloud.subscriptions,
        vec![
            Subscription::Methods,
            Subscription::Desired,
            Subscription::Twin
        ]
    );
    let answer = cloud.method("reboot").unwrap();
    assert_eq!(answer.downtime, Duration::from_secs(1));

    let s = scenario::load(Path::new("scenarios/hub-commands-s1.yaml")).expect("hub-commands-s1");
    let limits = &s.fleet.limits;
    assert!(
        limits.methods.is_some() && limits.twin_updates.is_some() && limits.twin_reads.is_some()
    );
}

#[test]
fn cohorts_replace_the_behaviour_field_by_field() {
    let s = parse(
        "  cohorts:\n\
         \x20   - {name: quiet, share: 50%}\n\
         \x20   - name: gateways\n\
         \x20     share: 50%\n\
         \x20     behaviour:\n\
         \x20       methods: {ping: {status: 204}}\n\
         behaviour:\n\
         \x20 reported: {model: gw}\n\
         \x20 methods: {reboot: {effect: reconnect}}\n",
    )
    .unwrap();
    let specs = fleetsim::fleet::device_specs(&s);
    let quiet = specs[0].cloud.as_ref().unwrap();
    let gateway = specs[1].cloud.as_ref().unwrap();
    assert!(quiet.method("reboot").is_some() && quiet.method("ping").is_none());
    assert!(gateway.method("ping").is_some() && gateway.method("reboot").is_none());
    assert_eq!(
        gateway.reported, quiet.reported,
        "reported comes from the top level"
    );
    let plain = parse("").unwrap();
    assert!(fleetsim::fleet::device_specs(&plain)[0].cloud.is_none());
}

#[test]
fn behaviour_mistakes_are_located() {
    refused(
        "behaviour:\n  methods:\n    reboot: {efect: reconnect}\n",
        "10",
        "efect",
    );
    refused(
        "behaviour:\n  methods:\n    reboot: {think: {p50: 50ms}}\n",
        "10",
        "{p50: D, p99: D}",
    );
    refused(
        "behaviour:\n  subscriptions: [methods]\n  desired: {telemetryInterval: set_interval}\n",
        "10:12",
        "needs the desired subscription",
    );
    refused(
        "behaviour:\n  reported:\n    firmware: \"{version}\"\n",
        "10",
        "unknown placeholder {version}",
    );
    refused(
        "behaviour:\n  subscriptions: [methods, twin, twin]\n",
        "9:18",
        "listed twice",
    );
    refused(
        "  cohorts:\n    - name: odd\n      share: 100%\n      behaviour: {methods: {reboot: {downtime: 1s}}}\n",
        "11",
        "cohort \"odd\": behaviour.methods.reboot: downtime goes with effect: reconnect",
    );
}

#[test]
fn event_mistakes_are_located() {
    refused(
        "events:\n  - {at: 2s, method: admin}\n",
        "9:5",
        "add revoke",
    );
    refused(
        "events:\n  - at: 2s\n    method: {name: reboot}\n",
        "9:5",
        "needs devices",
    );
    refused(
        "events:\n  - at: 2s\n    method: {name: reboot, devices: 10%, response_timeout: 2s}\n",
        "9:5",
        "5s to 300s",
    );
    refused(
        "events:\n  - at: 2s\n    method: {name: reboot, devices: 10%, colour: red}\n",
        "10",
        "colour",
    );
    refused(
        "events:\n  - at: 2s\n    desired: {patch: {telemetryInterval: 5}, devices: ten}\n",
        "10",
        "a share of the devices such as 50%",
    );
    refused(
        "events:\n  - {at: 2s, query: {text: \"SELECT * FROM devices\"}, revoke: 5%}\n",
        "9:5",
        "one thing",
    );
    refused(
        "events:\n  - {at: 40s, query: {text: \"SELECT * FROM devices\"}}\n",
        "9:5",
        "not before the end of the run",
    );
}

#[test]
fn a_basic_tier_refuses_cloud_to_device_scenarios() {
    let text = "name: b\nduration: 30s\ntarget:\n  embedded:\n    hub: {sku: B1}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\n\
                behaviour:\n  methods: {reboot: {}}\n";
    let err = scenario::parse(text, Path::new("basic.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("basic.yaml:4:") && err.contains("basic tier"),
        "{err}"
    );
    let revocation_only = "name: b\nduration: 30s\ntarget:\n  embedded:\n    hub: {sku: B1}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\n\
                           events:\n  - {at: 2s, revoke: 10%}\n";
    assert!(scenario::parse(revocation_only, Path::new("basic.yaml")).is_ok());
}
