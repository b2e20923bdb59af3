use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;
use crate::metrics::{DeviceState, Outcome, Phase};

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A tiny parser for what [`render`] writes: comments are HELP/TYPE, everything else a sample.
/// Panics (failing the test) on any line of another shape.
fn parse(text: &str) -> (BTreeMap<String, (String, String)>, Vec<Line>) {
    let mut help = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            assert!(help.insert(name.to_string(), text.to_string()).is_none());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(help.contains_key(name), "HELP before TYPE: {line}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "odd line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (k.to_string(), v.expect("quoted label value").to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        samples.push(Line {
            name: name.to_string(),
            labels,
            value,
        });
    }
    let families = types
        .into_iter()
        .map(|(name, kind)| {
            let help = help.remove(&name).unwrap_or_default();
            (name, (kind, help))
        })
        .collect();
    assert!(help.is_empty(), "HELP without TYPE: {help:?}");
    (families, samples)
}

/// The family a sample belongs to: histogram series drop their suffix.
fn family<'a>(name: &'a str, families: &BTreeMap<String, (String, String)>) -> &'a str {
    if families.contains_key(name) {
        return name;
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|f| families.get(*f).is_some_and(|(k, _)| k == "histogram"))
        .unwrap_or_else(|| panic!("{name} has no family"))
}

fn recorded() -> Recorder {
    let r = Recorder::with_shards(2);
    let t0 = Instant::now();
    // 0.5 ms, 3 ms, 40 ms, 2 s and 45 s connects; two failed issues.
    for ms in [0.5, 3.0, 40.0, 2_000.0, 45_000.0] {
        r.record(
            Phase::MqttConnect,
            Outcome::Ok,
            t0,
            t0 + Duration::from_secs_f64(ms / 1000.0),
        );
    }
    r.record(
        Phase::CaIssue,
        Outcome::Error,
        t0,
        t0 + Duration::from_millis(7),
    );
    r.record(
        Phase::CaIssue,
        Outcome::Error,
        t0,
        t0 + Duration::from_millis(8),
    );
    r.error(Phase::CaIssue, "http_500");
    r.error(Phase::CaIssue, "http_500");
    r.error(Phase::MqttConnect, "connack_5");
    r.transition(None, DeviceState::Pending);
    r.transition(Some(DeviceState::Pending), DeviceState::Online);
    r.transition(None, DeviceState::Enrolling);
    r.message_sent();
    r.message_sent();
    r.message_acked();
    r.message_failed();
    r
}

fn value(samples: &[Line], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
        .value
}

#[test]
fn rendered_text_is_well_formed_exposition() {
    let extra = [Sample {
        name: "fleetsim_hub_connects_total",
        help: "Connections the hub accepted.",
        kind: Kind::Counter,
        value: 12.0,
    }];
    let text = render(&recorded().snapshot(), &extra);
    let (families, samples) = parse(&text);
    for s in &samples {
        let f = family(&s.name, &families);
        assert!(f.starts_with("fleetsim_"), "{f}");
    }
    for f in families.keys() {
        assert!(!families[f].1.is_empty(), "{f} has help text");
    }
    assert_eq!(families["fleetsim_phase_duration_seconds"].0, "histogram");
    assert_eq!(families["fleetsim_devices"].0, "gauge");
    assert_eq!(families["fleetsim_messages_total"].0, "counter");
    assert_eq!(families["fleetsim_errors_total"].0, "counter");
    assert_eq!(families["fleetsim_hub_connects_total"].0, "counter");

    // Buckets: non-decreasing per series, `+Inf` equal to `_count`.
    // Labels other than `le` → (le, cumulative count) in order of appearance.
    type Buckets = Vec<(f64, f64)>;
    let mut series: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "fleetsim_phase_duration_seconds_bucket")
    {
        let le: f64 = match s.labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            le => le.parse().expect("le is a number"),
        };
        let key = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(key).or_default().push((le, s.value));
    }
    assert_eq!(series.len(), 2, "mqtt.connect/ok and ca.issue/error");
    for (key, buckets) in &series {
        assert_eq!(buckets.len(), BUCKETS_SECONDS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "le ascending");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{key:?}");
        let labels: Vec<(&str, &str)> = key.iter().map(|(k, v)| (&**k, &**v)).collect();
        let count = value(&samples, "fleetsim_phase_duration_seconds_count", &labels);
        assert_eq!(buckets.last().map(|b| b.1), Some(count), "{key:?}");
    }

    let connect = [("phase", "mqtt.connect"), ("outcome", "ok")];
    let bucket = |le: &str| {
        let mut l = connect.to_vec();
        l.push(("le", le));
        value(&samples, "fleetsim_phase_duration_seconds_bucket", &l)
    };
    assert_eq!(bucket("0.001"), 1.0);
    assert_eq!(bucket("0.0025"), 1.0);
    assert_eq!(bucket("0.005"), 2.0);
    assert_eq!(bucket("0.05"), 3.0);
    assert_eq!(bucket("2.5"), 4.0);
    assert_eq!(bucket("30"), 4.0, "45 s is above the last bound");
    assert_eq!(bucket("+Inf"), 5.0);
    let sum = value(&samples, "fleetsim_phase_duration_seconds_sum", &connect);
    assert!((sum - 47.0435).abs() < 47.0435 * 0.001, "sum {sum}");

    assert_eq!(
        value(&samples, "fleetsim_devices", &[("state", "online")]),
        1.0
    );
    assert_eq!(
        value(&samples, "fleetsim_devices", &[("state", "pending")]),
        0.0
    );
    assert_eq!(
        value(&samples, "fleetsim_messages_total", &[("result", "sent")]),
        2.0
    );
    assert_eq!(
        value(&samples, "fleetsim_messages_total", &[("result", "acked")]),
        1.0
    );
    assert_eq!(
        value(&samples, "fleetsim_messages_total", &[("result", "failed")]),
        1.0
    );
    let issue = [("phase", "ca.issue"), ("kind", "http_500")];
    assert_eq!(value(&samples, "fleetsim_errors_total", &issue), 2.0);
    let connack = [("phase", "mqtt.connect"), ("kind", "connack_5")];
    assert_eq!(value(&samples, "fleetsim_errors_total", &connack), 1.0);
    assert_eq!(value(&samples, "fleetsim_hub_connects_total", &[]), 12.0);
}

#[test]
fn an_empty_recorder_still_declares_every_family() {
    let (families, samples) = parse(&render(&Recorder::with_shards(1).snapshot(), &[]));
    let names: BTreeSet<&str> = families.keys().map(String::as_str).collect();
    for f in [
        "fleetsim_phase_duration_seconds",
        "fleetsim_devices",
        "fleetsim_messages_total",
        "fleetsim_errors_total",
    ] {
        assert!(names.contains(f), "{f}");
    }
    assert!(
        !samples
            .iter()
            .any(|s| s.name.starts_with("fleetsim_phase_duration_seconds"))
    );
}

#[test]
fn label_values_are_escaped() {
    let r = Recorder::with_shards(1);
    r.error(Phase::Csr, "weird \"kind\"\\with\nnewline");
    let text = render(&r.snapshot(), &[]);
    assert!(
        text.contains(r#"kind="weird \"kind\"\\with\nnewline""#),
        "{text}"
    );
}

#[tokio::test]
async fn serves_metrics_over_http_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Arc::new(recorded());
    let stop = tokio_util::sync::CancellationToken::new();
    let extra: SampleSource = Arc::new(|| {
        vec![Sample {
            name: "fleetsim_hub_refused_total",
            help: "Refused.",
            kind: Kind::Counter,
            value: 3.0,
        }]
    });
    let server = tokio::spawn(serve(
        listener,
        recorder.clone(),
        Some(extra),
        stop.clone().cancelled_owned(),
    ));
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.contains("fleetsim_messages_total{result=\"sent\"} 2\n"),
        "{body}"
    );
    assert!(body.contains("fleetsim_hub_refused_total 3\n"), "{body}");

    // Each scrape renders afresh.
    recorder.message_sent();
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("fleetsim_messages_total{result=\"sent\"} 3\n"));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops on shutdown")
        .unwrap()
        .unwrap();
}

#[test]
fn certificate_health_is_served_as_written() {
    let mut snap = crate::metrics::certs::CertSnapshot {
        valid: 7,
        expiring: 2,
        expired: 1,
        revoked: 3,
        renewals_ok: 9,
        renewals_given_up: 1,
        renewal_tries_failed: 4,
        expired_before_renewal: 1,
        ..Default::default()
    };
    snap.time_to_expiry_seconds.count = 9;
    snap.time_to_expiry_seconds.min = 1.5;
    snap.time_to_expiry_seconds.p50 = 20.0;
    snap.time_to_expiry_seconds.max = 40.0;
    let mut out = String::new();
    cert_health(&mut out, &snap);
    let (_, samples) = parse(&out);
    let value = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|l| {
                l.name == name
                    && label.is_none_or(|(k, v)| l.labels.get(k).map(String::as_str) == Some(v))
            })
            .unwrap_or_else(|| panic!("{name} {label:?} in:\n{out}"))
            .value
    };
    for (status, n) in [
        ("valid", 7.0),
        ("expiring", 2.0),
        ("expired", 1.0),
        ("revoked", 3.0),
    ] {
        assert_eq!(value("fleetsim_certificates", Some(("status", status))), n);
    }
    let expiry = "fleetsim_certificate_time_to_expiry_seconds";
    assert_eq!(value(expiry, Some(("quantile", "0"))), 1.5);
    assert_eq!(value(expiry, Some(("quantile", "0.5"))), 20.0);
    assert_eq!(value(expiry, Some(("quantile", "1"))), 40.0);
    assert_eq!(
        value("fleetsim_renewals_total", Some(("result", "ok"))),
        9.0
    );
    assert_eq!(
        value("fleetsim_renewals_total", Some(("result", "given_up"))),
        1.0
    );
    assert_eq!(value("fleetsim_renewal_tries_failed_total", None), 4.0);
    assert_eq!(value("fleetsim_expired_before_renewal_total", None), 1.0);
    assert_eq!(value("fleetsim_renewal_success_ratio", None), 0.9);
}

#[test]
fn scenario_events_are_counted_by_kind_for_grafana_annotations() {
    let event = |kind: &str| crate::metrics::board::BoardEvent {
        t: 1.0,
        kind: kind.into(),
        detail: String::new(),
    };
    let mut out = String::new();
    super::render_events(
        &mut out,
        &[event("revoke"), event("method"), event("revoke")],
    );
    assert!(out.contains("# TYPE fleetsim_events_total counter"));
    assert!(out.contains("fleetsim_events_total{kind=\"revoke\"} 2\n"));
    assert!(out.contains("fleetsim_events_total{kind=\"method\"} 1\n"));
    assert!(out.contains("fleetsim_events_total{kind=\"c2d\"} 0\n"));
}
