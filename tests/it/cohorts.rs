//! Cohorts: several device groups in one scenario, each with its own settings. The key kinds
//! show in the certificates the CA issued, the telemetry intervals in the gaps between the
//! messages the hub received, and the report counts each cohort's devices. Bad cohort sizes are
//! refused with file:line:column.

use std::collections::HashMap;
use std::path::Path;

use fleetsim::fleet::{self, RunOptions};
use x509_parser::public_key::PublicKey;

const SCENARIO: &str = r#"
name: cohorts
seed: 3
duration: 5s
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

/// Each device's mean gap in ms between consecutive messages the hub received (devices with at
/// least two), from the hub's Event Hub-compatible log.
fn mean_gaps(outcome: &fleet::RunOutcome) -> HashMap<String, f64> {
    let log = outcome.hub.as_ref().expect("embedded hub").event_log();
    let mut times: HashMap<String, Vec<i64>> = HashMap::new();
    for partition in 0..log.partition_count() {
        for e in log.read(partition, 0, usize::MAX) {
            times
                .entry(e.device_id.to_string())
                .or_default()
                .push(e.enqueued_ms);
        }
    }
    times
        .into_iter()
        .filter(|(_, t)| t.len() >= 2)
        .map(|(id, mut t)| {
            t.sort();
            let span = (t[t.len() - 1] - t[0]) as f64;
            (id, span / (t.len() - 1) as f64)
        })
        .collect()
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
    // Gateways publish every 200 ms, sensors every second. Compared as each device's mean gap
    // between the messages the hub received, not as totals over the run: a gateway's RSA key
    // is generated when it arrives, which on a loaded machine took ~2.5 s of the run, and a
    // late gateway then sent fewer messages in all than an early sensor (1 vs 3).
    let gaps = mean_gaps(&outcome);
    let gap = |id: &str| {
        *gaps
            .get(id)
            .unwrap_or_else(|| panic!("{id}: fewer than two messages reached the hub: {gaps:?}"))
    };
    let slowest_gateway = gateways.iter().map(|d| gap(&d.id)).fold(0.0, f64::max);
    let quickest_sensor = sensors.iter().map(|d| gap(&d.id)).fold(f64::MAX, f64::min);
    assert!(
        slowest_gateway < 400.0 && quickest_sensor > 700.0,
        "mean gaps: gateways up to {slowest_gateway} ms, sensors from {quickest_sensor} ms: {gaps:?}"
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

    // A cohort's own renewal is checked against its own key, and the error names the cohort.
    let text = SCENARIO.replace(
        "      id_pattern: \"sensor-{index:03}\"\n",
        "      id_pattern: \"sensor-{index:03}\"\n      certificate: {renewal: certificate}\n",
    );
    let e = fleetsim::scenario::parse(&text, Path::new("cohorts.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cohorts.yaml:"), "{e}");
    assert!(
        e.contains("cohort \"sensors\": renewal: certificate signs an RS256 token"),
        "{e}"
    );
    let text = SCENARIO.replace("{key: rsa-2048}", "{key: rsa-2048, renew_jitter: 30%}");
    let e = fleetsim::scenario::parse(&text, Path::new("cohorts.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cohort \"gateways\": certificate: renew_at"),
        "{e}"
    );
}

/// Renewal settings per cohort, under compressed time. The top level renews with the
/// certificate (certificate-JWT, RSA keys, keep the key, make-before-break); the sensors override
/// all of it (P-256 keys, which cannot sign the JWT, so they must renew as the enrollment agent,
/// with a new key each time, break-before-make).
const RENEWING: &str = r#"
name: cohort-renewal
seed: 4
duration: 8s
time_scale: 1s          # a 4-day certificate lives 4 s and renews at 2 s
target:
  embedded: {}
fleet:
  devices: 6
  arrival_rate: 50/s
  cohorts:
    - name: sensors
      share: 50%
      id_pattern: "sensor-{index:03}"
      certificate:
        key: p256
        renewal: enrollment-agent
        rekey: true
        swap: break-before-make
      telemetry: {qos: 0}
    - name: gateways
      share: 50%
      id_pattern: "gw-{index:03}"
certificate:
  key: rsa-2048
  key_source: fresh
  validity_days: 4
  renew_at: 50%
  renewal: certificate
  rekey: false
  swap: make-before-break
telemetry:
  interval: 200ms
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cohort_renews_its_own_way() {
    let scenario = fleetsim::scenario::parse(RENEWING, Path::new("renewing.yaml")).unwrap();
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes");
    // Had the sensors tried the certificate-JWT with their P-256 keys, they would have failed.
    assert_eq!(outcome.report.errors, Default::default(), "no errors");
    let ca = outcome.ca.as_ref().expect("embedded CA");
    let hub = outcome.hub.as_ref().expect("embedded hub");
    let issued = ca.issued();
    let (mut sensor_swaps, mut sensor_drops) = (0, 0);
    for d in &outcome.devices {
        assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
        assert!(d.renewals >= 2, "{} renewed {} times", d.id, d.renewals);
        let records: Vec<_> = issued.iter().filter(|r| r.subject_cn() == d.id).collect();
        let keys: std::collections::HashSet<Vec<u8>> =
            records.iter().map(|r| r.spki.clone()).collect();
        // The CA may have signed one more than the device counted: a renewal still in flight
        // when the run ended.
        assert!(
            records.len() as u64 >= d.certificates_issued,
            "{}: the CA issued {} of its {} certificates",
            d.id,
            records.len(),
            d.certificates_issued
        );
        let drops = hub.device_stats(&d.id).drops;
        if d.id.starts_with("gw-") {
            // rekey: false keeps one RSA key; make-before-break lets the hub take sessions over.
            assert_eq!(keys.len(), 1, "{}", d.id);
            assert_eq!(key_of(&d.chain[0]), ("rsa", 2048), "{}", d.id);
            assert!(drops >= d.swaps && d.swaps >= 2, "{}: {drops} drops", d.id);
        } else {
            // A new P-256 key per certificate the CA issued.
            assert_eq!(keys.len(), records.len(), "{}", d.id);
            assert_eq!(key_of(&d.chain[0]), ("ec", 256), "{}", d.id);
            sensor_swaps += d.swaps;
            sensor_drops += drops;
        }
    }
    // Break-before-make closes the old session itself: the hub rarely has one to take over
    // (only when the close reaches it after the new CONNECT).
    assert!(
        sensor_swaps >= 6 && sensor_drops * 2 <= sensor_swaps,
        "sensors: {sensor_drops} takeovers in {sensor_swaps} swaps"
    );
    let swap = &outcome.report.certificates.as_ref().unwrap().swap;
    assert_eq!(swap.mode, "break-before-make + make-before-break");
    // Only the QoS 1 cohort's messages are held to the hub's count.
    assert_eq!((swap.devices_compared, swap.qos1_lost), (3, 0));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_kind_enrols_and_connects() {
    // One device per kind the cohorts above do not use; the run stops once all are online
    // (an RSA key is generated when the device arrives: seconds on a loaded machine).
    let text = r#"
name: key-kinds
duration: 5m
target:
  embedded: {}
fleet:
  devices: 3
  arrival_rate: 10/s
  cohorts:
    - {name: p384, devices: 1, id_pattern: "p384-{index}", certificate: {key: p384}}
    - {name: rsa3072, devices: 1, id_pattern: "rsa3072-{index}", certificate: {key: rsa-3072}}
    - {name: rsa4096, devices: 1, id_pattern: "rsa4096-{index}", certificate: {key: rsa-4096}}
telemetry:
  interval: 1s
"#;
    let scenario = fleetsim::scenario::parse(text, Path::new("key-kinds.yaml")).unwrap();
    let (listener, addr) = crate::common::metrics_listener();
    let options = RunOptions {
        metrics_listener: Some(listener),
        ..RunOptions::default()
    };
    let online = crate::common::until_metrics(addr, std::time::Duration::from_secs(120), |value| {
        value(r#"fleetsim_devices{state="online"}"#) == 3.0
    });
    let outcome = fleet::run(&scenario, &options, online)
        .await
        .expect("run completes");
    assert_eq!(outcome.report.devices.connected, 3);
    let mut kinds: Vec<(String, (&str, usize))> = outcome
        .devices
        .iter()
        .map(|d| (d.id.clone(), key_of(&d.chain[0])))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("p384-0".to_string(), ("ec", 384)),
            ("rsa3072-1".to_string(), ("rsa", 3072)),
            ("rsa4096-2".to_string(), ("rsa", 4096)),
        ]
    );
}
