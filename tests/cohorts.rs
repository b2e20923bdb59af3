//! Cohorts: several device groups in one scenario, each with its own settings. The key kinds
//! show in the certificates the CA issued, the telemetry intervals in the message counts, and
//! the report counts each cohort's devices. Bad cohort sizes are refused with file:line:column.

use std::path::Path;

use fleetsim::fleet::{self, RunOptions};
use x509_parser::public_key::PublicKey;

const SCENARIO: &str = r#"
name: cohorts
seed: 3
duration: 3s
target:
  embedded: {}
fleet:
  devices: 10
  arrival_rate: 20/s
  cohorts:
    - name: sensors
      share: 80%
      id_pattern: "sensor-{index:03}"
    - name: gateways
      share: 20%
      id_pattern: "gw-{index:03}"
      certificate: {key: rsa-2048}
      telemetry: {interval: 200ms}
certificate:
  key: p256
telemetry:
  interval: 1s
"#;

/// The kind and size of the key a certificate certifies, e.g. ("ec", 256) or ("rsa", 2048).
fn key_of(der: &[u8]) -> (&'static str, usize) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate parses");
    match cert.public_key().parsed().expect("public key parses") {
        PublicKey::RSA(rsa) => ("rsa", rsa.key_size()),
        PublicKey::EC(point) => ("ec", point.key_size()),
        _ => ("other", 0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cohort_gets_its_own_settings() {
    let scenario = fleetsim::scenario::parse(SCENARIO, Path::new("cohorts.yaml")).unwrap();
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes");
    let report = &outcome.report;
    let counts: Vec<(&str, u64, u64)> = report
        .cohorts
        .iter()
        .map(|c| (c.name.as_str(), c.planned, c.connected))
        .collect();
    assert_eq!(counts, vec![("sensors", 8, 8), ("gateways", 2, 2)]);

    let (sensors, gateways): (Vec<_>, Vec<_>) = outcome
        .devices
        .iter()
        .partition(|d| d.id.starts_with("sensor-"));
    assert_eq!((sensors.len(), gateways.len()), (8, 2));
    for d in &sensors {
        assert_eq!(key_of(&d.chain[0]), ("ec", 256), "{}", d.id);
    }
    for d in &gateways {
        assert!(d.id.starts_with("gw-"), "{}", d.id);
        assert_eq!(key_of(&d.chain[0]), ("rsa", 2048), "{}", d.id);
    }
    // Gateways publish every 200 ms, sensors every second: even the least chatty gateway sent
    // more than the chattiest sensor.
    let most_sensor = sensors.iter().map(|d| d.messages_acked).max().unwrap();
    let least_gateway = gateways.iter().map(|d| d.messages_acked).min().unwrap();
    assert!(
        least_gateway > most_sensor * 2,
        "gateways {least_gateway}, sensors {most_sensor}"
    );
    // Gateways are spread through the fleet, not all at its end.
    let mut gateway_indices: Vec<u32> = gateways
        .iter()
        .map(|d| d.id.trim_start_matches("gw-").parse().unwrap())
        .collect();
    gateway_indices.sort();
    assert!(gateway_indices[0] < 5, "{gateway_indices:?}");
}

#[test]
fn bad_cohort_sizes_name_the_line_and_column() {
    let text = SCENARIO.replace("share: 20%", "share: 15%");
    let e = fleetsim::scenario::parse(&text, Path::new("cohorts.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cohorts.yaml:11:"), "{e}");
    assert!(e.contains("cohort shares sum to 95%: expected 100%"), "{e}");

    let text = SCENARIO.replace("share: 20%", "devices: 2");
    let e = fleetsim::scenario::parse(&text, Path::new("cohorts.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("all give share or all give devices"), "{e}");

    let text = SCENARIO.replace("{key: rsa-2048}", "{key: rsa-2048, renewal: certificate}");
    let e = fleetsim::scenario::parse(&text, Path::new("cohorts.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("renewal") && e.contains("expected"), "{e}");
}

#[test]
fn cohorts_with_their_own_arrivals_need_no_fleet_arrival() {
    let own = SCENARIO.replace("  arrival_rate: 20/s\n", "").replace(
        "      share: 80%\n",
        "      share: 80%\n      arrival: {rate: 5/s, stages: [{ramp_to: 20/s, over: 2s}]}\n",
    );
    let e = fleetsim::scenario::parse(&own, Path::new("cohorts.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fleet needs arrival_rate"), "{e}");
    let both = own.replace(
        "      share: 20%\n",
        "      share: 20%\n      arrival: {max_in_flight: 1}\n",
    );
    let s = fleetsim::scenario::parse(&both, Path::new("cohorts.yaml")).expect("parses");
    assert!(s.fleet.arrival().is_none());
}
