//! Generation: determinism per seed, each generator's distribution, raw sizes, property bags.

use std::sync::Arc;

use serde_json::Value as Json;

use super::*;
use crate::iothub::topics;
use crate::scenario::draw::mean_and_deviation;
use crate::scenario::telemetry::{self as section, Telemetry};

/// The plan of a `telemetry:` section written in YAML, checked as `validate` checks it.
fn plan(yaml: &str) -> Arc<TelemetryPlan> {
    let t: Telemetry = serde_saphyr::from_str(yaml).unwrap();
    section::validate(&t, None, "", serde_saphyr::Location::UNKNOWN).unwrap();
    Arc::new(TelemetryPlan::new(t.settings(), "thermostats"))
}

/// `n` messages of device `id` (index 7) with seed `seed`.
fn messages(plan: &Arc<TelemetryPlan>, id: &str, seed: u64, n: usize) -> Vec<Message> {
    let mut b = MessageBuilder::new(plan.clone(), id, seed);
    (0..n)
        .map(|i| b.build(id, 7, 1_764_513_000_000 + i as i64 * 1000))
        .collect()
}

fn json(m: &Message) -> Json {
    serde_json::from_slice(&m.payload).unwrap()
}

fn column(plan: &Arc<TelemetryPlan>, field: &str, n: usize) -> Vec<f64> {
    messages(plan, "d", 1, n)
        .iter()
        .map(|m| json(m)[field].as_f64().unwrap())
        .collect()
}

const SENSOR: &str = r#"
payload:
  json:
    id: $device.id
    cohort: $device.cohort
    index: $device.index
    seq: {$counter: {start: 100, step: 2}}
    at: $timestamp
    atMs: $timestamp.ms
    reading: {$uuid: null}
"#;

#[test]
fn the_same_seed_gives_the_same_payloads_and_another_seed_others() {
    let p = plan(
        "payload: {json: {t: {$walk: {min: 15, max: 30, step: 0.3}}, u: {$uniform: {min: 0, max: 1}}, \
         s: {$choice: {a: 1, b: 2}}, b: {$bool: 50%}, id: $uuid, x: {$text: 12}}}\n\
         properties: {message_id: $uuid, application: {n: {$normal: {mean: 0, stddev: 1}}}}",
    );
    let a = messages(&p, "dev-1", 42, 200);
    let b = messages(&p, "dev-1", 42, 200);
    assert_eq!(a, b, "same seed, same sequence");
    let c = messages(&p, "dev-1", 43, 200);
    assert_ne!(a[0].payload, c[0].payload);
    assert_ne!(a[0].topic, c[0].topic);
    // Each message differs from the last (the walk moves, the draws are fresh).
    assert!(a.windows(2).all(|w| w[0].payload != w[1].payload));
}

#[test]
fn device_fields_counters_and_timestamps() {
    // A string generator given a mapping is refused; the string form works.
    assert!(serde_saphyr::from_str::<Telemetry>(SENSOR).is_err());
    let p = plan(&SENSOR.replace("{$uuid: null}", "$uuid"));
    let ms = messages(&p, "dev-9", 1, 3);
    let v = json(&ms[2]);
    assert_eq!(v["id"], "dev-9");
    assert_eq!(v["cohort"], "thermostats");
    assert_eq!(v["index"], 7);
    assert_eq!(v["seq"], 104);
    assert_eq!(v["at"], "2025-11-30T14:30:02.000Z");
    assert_eq!(v["atMs"], 1_764_513_002_000i64);
    let id = v["reading"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    // Keys keep their order as written.
    let text = String::from_utf8(ms[0].payload.clone()).unwrap();
    assert!(text.starts_with(r#"{"id":"dev-9","cohort":"thermostats","index":7,"seq":100,"#));
}

#[test]
fn uniform_and_normal_draws_have_their_distributions() {
    let p = plan("payload: {json: {u: {$uniform: {min: 10, max: 20, decimals: 1}}}}");
    let u = column(&p, "u", 20_000);
    assert!(u.iter().all(|x| (10.0..=20.0).contains(x)));
    assert!(
        u.iter()
            .all(|x| ((x * 10.0).round() - x * 10.0).abs() < 1e-9),
        "one decimal"
    );
    let (mean, dev) = mean_and_deviation(&u);
    assert!((mean - 15.0).abs() < 0.06, "uniform mean {mean}");
    assert!(
        (dev - 10.0 / 12f64.sqrt()).abs() < 0.05,
        "uniform deviation {dev}"
    );

    let p = plan("payload: {json: {n: {$normal: {mean: 1013, stddev: 4}}}}");
    let (mean, dev) = mean_and_deviation(&column(&p, "n", 20_000));
    assert!(
        (mean - 1013.0).abs() < 0.1 && (dev - 4.0).abs() < 0.1,
        "{mean} {dev}"
    );

    let p =
        plan("payload: {json: {n: {$normal: {mean: 0, stddev: 1, min: -1, max: 1, decimals: 0}}}}");
    let n = column(&p, "n", 5_000);
    assert!(
        n.iter().all(|x| [-1.0, 0.0, 1.0].contains(x)),
        "clamped and whole"
    );
}

#[test]
fn walks_stay_in_bounds_and_step_as_written() {
    let p = plan("payload: {json: {t: {$walk: {start: 21, min: 15, max: 30, step: 0.1}}}}");
    let t = column(&p, "t", 5_000);
    assert_eq!(t[0], 21.0, "the first message reports the start");
    assert!(t.iter().all(|x| (15.0..=30.0).contains(x)));
    let steps: Vec<f64> = t
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d != 0.0)
        .collect();
    let (mean, dev) = mean_and_deviation(&steps);
    assert!(
        mean.abs() < 0.01 && (dev - 0.1).abs() < 0.01,
        "steps {mean} {dev}"
    );

    // A draining battery: drift down to the floor, then stays there.
    let p = plan(
        "payload: {json: {b: {$walk: {start: 100, min: 0, max: 100, step: 0.01, drift: -1}}}}",
    );
    let b = column(&p, "b", 300);
    assert!(b[50] < 52.0 && b[50] > 48.0, "{}", b[50]);
    assert_eq!(*b.last().unwrap(), 0.0);

    // Without a start, each device starts somewhere else in the range.
    let p = plan("payload: {json: {t: {$walk: {min: 0, max: 100, step: 1}}}}");
    let starts: Vec<f64> = (0..200)
        .map(|seed| json(&messages(&p, "d", seed, 1)[0])["t"].as_f64().unwrap())
        .collect();
    let (mean, dev) = mean_and_deviation(&starts);
    assert!((mean - 50.0).abs() < 6.0 && dev > 20.0, "{mean} {dev}");
}

#[test]
fn choices_and_booleans_come_with_their_odds() {
    let p = plan("payload: {json: {door: {$choice: {open: 1, closed: 9}}, low: {$bool: 5%}}}");
    let ms = messages(&p, "d", 3, 40_000);
    let open = ms.iter().filter(|m| json(m)["door"] == "open").count() as f64 / 40_000.0;
    let low = ms.iter().filter(|m| json(m)["low"] == true).count() as f64 / 40_000.0;
    assert!((open - 0.1).abs() < 0.006, "open {open}");
    assert!((low - 0.05).abs() < 0.005, "low {low}");
    assert!(
        ms.iter()
            .all(|m| matches!(json(m)["door"].as_str(), Some("open" | "closed")))
    );
}

#[test]
fn text_and_repeat_make_what_they_say() {
    let p = plan(
        "payload: {json: {pad: {$text: 900}, batch: {$repeat: {count: 50, item: {t: {$walk: {min: 0, max: 10, step: 1}}, k: 1}}}}}",
    );
    let v = json(&messages(&p, "d", 1, 1)[0]);
    let pad = v["pad"].as_str().unwrap();
    assert_eq!(pad.len(), 900);
    assert!(pad.bytes().all(|b| b.is_ascii_lowercase()));
    let batch = v["batch"].as_array().unwrap();
    assert_eq!(batch.len(), 50);
    assert!(batch.iter().all(|i| i["k"] == 1 && i["t"].is_number()));
}

#[test]
fn raw_payloads_have_exact_and_lognormal_sizes() {
    let p = plan("payload: {size: 4KB}\nproperties: {content_type: application/octet-stream}");
    for m in messages(&p, "d", 1, 20) {
        assert_eq!(m.payload.len(), 4096);
        assert_eq!(m.size, 4096 + "application/octet-stream".len() as u64);
        assert_eq!(m.meters, 2, "4 KB of body and a property: two meters");
    }
    let p = plan("payload: {size: 4000B}");
    let m = &messages(&p, "d", 1, 1)[0];
    assert_eq!((m.payload.len(), m.meters), (4000, 1));
    assert_eq!(
        m.topic, "devices/d/messages/events/",
        "raw bytes carry no properties unless told"
    );

    let p = plan("payload: {size: {dist: lognormal, p50: 1KB, p99: 16KB}}");
    let mut sizes: Vec<usize> = messages(&p, "d", 1, 20_000)
        .iter()
        .map(|m| m.payload.len())
        .collect();
    sizes.sort_unstable();
    let (p50, p99) = (sizes[10_000] as f64, sizes[19_800] as f64);
    assert!((p50 / 1024.0 - 1.0).abs() < 0.04, "p50 {p50}");
    assert!((p99 / (16.0 * 1024.0) - 1.0).abs() < 0.12, "p99 {p99}");
}

#[test]
fn properties_go_into_the_bag_as_iot_hub_reads_them() {
    let p = plan(
        r#"
payload:
  json:
    temperature: {$uniform: {min: 20, max: 40, decimals: 1}}
    site: plant 7/b
properties:
  message_id: $uuid
  correlation_id: "batch&1"
  application:
    alert: {$above: {field: temperature, threshold: 30}}
    reading: {$field: temperature}
    site: {$field: site}
    kind: reading
"#,
    );
    for m in messages(&p, "dev 1", 5, 200) {
        let props = topics::parse_telemetry(&m.topic, "dev 1").expect("a telemetry topic");
        let names: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "$.ct", "$.ce", "$.mid", "$.cid", "alert", "reading", "site", "kind"
            ]
        );
        let get = |k: &str| props.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("$.ct"), "application/json");
        assert_eq!(get("$.ce"), "utf-8");
        assert_eq!(get("$.cid"), "batch&1");
        assert!(uuid::Uuid::parse_str(&get("$.mid")).is_ok());
        let t = json(&m)["temperature"].as_f64().unwrap();
        assert_eq!(get("reading").parse::<f64>().unwrap(), t);
        assert_eq!(get("alert"), (t > 30.0).to_string());
        assert_eq!(get("site"), "plant 7/b");
        assert_eq!(get("kind"), "reading");
        // `$` goes as %24, `&` and `/` escaped: the bag splits where it should.
        assert!(m.topic.contains("%24.cid=batch%261&"), "{}", m.topic);
        assert_eq!(m.size, topics::message_size(m.payload.len(), &props));
    }
}

#[test]
fn without_a_payload_devices_send_the_ezca_sample() {
    let p = TelemetryPlan::every(std::time::Duration::from_secs(5));
    for (i, m) in messages(&p, "d1", 7, 50).iter().enumerate() {
        let v = json(m);
        assert_eq!(v["deviceId"], "d1");
        assert_eq!(v["messageId"], i as u64);
        let t = v["temperature"].as_f64().unwrap();
        assert!((20.0..35.0).contains(&t));
        assert!((60.0..80.0).contains(&v["humidity"].as_f64().unwrap()));
        let alert = format!("temperatureAlert={}", t > 30.0);
        assert!(m.topic.ends_with(&alert), "{}", m.topic);
        assert!(
            m.topic
                .starts_with("devices/d1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&")
        );
    }
}

#[test]
fn the_size_profile_is_what_messages_cost() {
    let p = plan("payload: {size: 6KB}\ninterval: 10s");
    let profile = size_profile(&p, 10);
    assert_eq!((profile.mean_bytes, profile.mean_meters), (6144.0, 2.0));
    assert!((profile.messages_per_second - 0.1).abs() < 1e-12);
}
