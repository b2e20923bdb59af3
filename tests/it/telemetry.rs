//! Telemetry as a fleet sends it, checked against what the embedded hub received and stored:
//! templated payloads and properties (the hub's stored property bag equals what the device's
//! seed regenerates), raw sizes exact to the byte, IoT Hub's 4 KB meters on both sides, the
//! herd of an aligned schedule, and `fleetsim validate` on templates and shipped scenarios.

use std::collections::HashMap;
use std::path::Path;

use fleetsim::device::messages::{MessageBuilder, payload_seed};
use fleetsim::fleet::{self, RunOptions};

use crate::validate::validate;

const FLEET: &str = r#"
name: telemetry-test
seed: 11
duration: 6s
target:
  embedded: {}
fleet:
  devices: 24
  id_pattern: "tel-{index:03}"
  arrival_rate: 40/s
  cohorts:
    - name: sensors
      share: 50%
      telemetry:
        schedule: {every: 400ms, jitter: 20%}
        payload:
          json:
            deviceId: $device.id
            cohort: $device.cohort
            seq: $counter
            temperature: {$walk: {min: 15, max: 30, step: 0.5, decimals: 2}}
            door: {$choice: {open: 1, closed: 4}}
            pad: {$text: 900}
        properties:
          message_id: {$counter: {start: 1000}}
          correlation_id: "run 11/a&b"
          application:
            hot: {$above: {field: temperature, threshold: 22.5}}
            door: {$field: door}
            site: "plant 7"
    - name: meters
      share: 50%
      telemetry:
        schedule: {every: 500ms, count: 2, spacing: 50ms}
        payload: {size: 5KB}
certificate:
  key: p256
telemetry:
  qos: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_stores_what_each_device_generated_byte_for_byte() {
    let scenario = fleetsim::scenario::parse(FLEET, Path::new("telemetry.yaml")).unwrap();
    let specs: HashMap<String, _> = fleet::device_specs(&scenario)
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes");
    let hub = outcome.hub.as_ref().expect("embedded hub");
    assert_eq!(outcome.devices.len(), 24);
    let (mut sensors, mut meters) = (0, 0);
    for d in &outcome.devices {
        assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
        assert_eq!(d.messages_failed, 0);
        assert!(d.messages_acked >= 5, "{} sent {}", d.id, d.messages_acked);
        let seen = hub.device_stats(&d.id);
        // What the device counted is what the hub counted: messages, bytes, meters.
        assert_eq!(seen.messages, d.messages_acked, "{}", d.id);
        assert_eq!(seen.bytes, d.bytes_sent, "{}", d.id);
        assert_eq!(seen.meters, d.meters_sent, "{}", d.id);
        let last = seen.last_message.expect("the hub kept the last message");

        // Regenerate the device's messages from its seed: the last one is what the hub stored.
        let spec = &specs[&d.id];
        let mut builder =
            MessageBuilder::new(spec.telemetry.clone(), &d.id, payload_seed(spec.seed));
        let mut message = None;
        for _ in 0..d.messages_acked {
            message = Some(builder.build(&d.id, spec.index, 0));
        }
        let expected = message.unwrap();
        assert_eq!(last.bytes, expected.payload.len() as u64, "{}", d.id);
        assert_eq!(last.size, expected.size, "{}: IoT Hub's size", d.id);
        let sent = fleetsim::iothub::topics::parse_telemetry(&expected.topic, &d.id).unwrap();
        assert_eq!(
            last.properties, sent,
            "{}: the property bag as stored",
            d.id
        );

        if spec.telemetry.cohort == "sensors" {
            sensors += 1;
            let get = |k: &str| {
                last.properties
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(get("$.ct"), Some("application/json"));
            assert_eq!(get("$.ce"), Some("utf-8"));
            assert_eq!(
                get("$.mid"),
                Some((1000 + d.messages_acked - 1).to_string().as_str())
            );
            assert_eq!(get("$.cid"), Some("run 11/a&b"));
            assert_eq!(get("site"), Some("plant 7"));
            assert!(matches!(get("hot"), Some("true" | "false")));
            assert!(matches!(get("door"), Some("open" | "closed")));
            assert!(
                last.bytes > 950,
                "a ~1 KB templated payload: {}",
                last.bytes
            );
        } else {
            meters += 1;
            // Raw 5 KB bodies, no properties: exactly 5120 bytes and two meters each.
            assert_eq!(seen.bytes, 5120 * seen.messages, "{}", d.id);
            assert_eq!(seen.meters, 2 * seen.messages, "{}", d.id);
            assert!(last.properties.is_empty());
        }
    }
    assert_eq!((sensors, meters), (12, 12), "the cohorts interleave");
    // The report and the hub agree on the totals.
    let r = &outcome.report;
    let h = r.hub.as_ref().unwrap();
    assert_eq!((r.messages.bytes, r.messages.meters), (h.bytes, h.meters));
    assert!(
        r.to_text()
            .contains(&format!("{} meters of 4 KB", r.messages.meters))
    );
}

const HERD: &str = r#"
name: herd-test
seed: 3
duration: 7s
target:
  embedded: {}
fleet:
  devices: 40
  arrival_rate: 20/s
certificate:
  key: p256
telemetry:
  schedule: {every: 2s, align: 2s}
  payload: {json: {at: $timestamp.ms}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aligned_schedule_makes_the_herd() {
    // Devices come online over two seconds, yet every message reaches the hub within the
    // second after a whole two seconds of the wall clock.
    let scenario = fleetsim::scenario::parse(HERD, Path::new("herd.yaml")).unwrap();
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes");
    let hub = outcome.hub.as_ref().unwrap();
    let mut ticks = std::collections::BTreeMap::new();
    for d in &outcome.devices {
        assert!(d.failure.is_none(), "{:?}", d.failure);
        let seen = hub.device_stats(&d.id);
        assert!(seen.messages >= 2, "{}: {} messages", d.id, seen.messages);
        let at = seen.last_message.unwrap().received_at_ms;
        assert!(
            at % 2000 < 1000,
            "{}: arrived {} ms after the tick",
            d.id,
            at % 2000
        );
        *ticks.entry(at / 2000).or_insert(0) += 1;
    }
    // The last messages of all devices fell on the last tick (or, if the run ended just as
    // one came, the one before).
    assert!(ticks.len() <= 2, "{ticks:?}");
    assert!(ticks.values().max() >= Some(&20), "{ticks:?}");
}

#[test]
fn validate_locates_template_errors_and_accepts_the_shipped_scenarios() {
    let dir = std::env::temp_dir().join(format!("fleetsim-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "name: b\nduration: 10s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\n\
         telemetry:\n  payload:\n    json:\n      t: {$normal: {mean: 20, stddev: -1}}\n",
    )
    .unwrap();
    let (ok, out) = validate(&path);
    assert!(!ok);
    assert!(out.contains(&format!("{}:11:20:", path.display())), "{out}");
    assert!(out.contains("stddev above 0"), "{out}");

    for shipped in [
        "scenarios/realistic-fleet.yaml",
        "scenarios/seed-sample.yaml",
    ] {
        let (ok, out) = validate(Path::new(shipped));
        assert!(ok, "{shipped}: {out}");
    }
}
