//! The Prometheus endpoint during a real run against the embedded emulators: a scrape mid-run
//! shows devices online, publishes and the hub's counters; every metric the Grafana dashboard
//! queries is one the endpoint serves; the endpoint goes away when the run ends.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetsim::fleet::{self, RunOptions};

const SCENARIO: &str = r#"
name: prometheus-test
seed: 11
duration: 4s
target:
  embedded: {}
fleet:
  devices: 20
  id_pattern: "prom-{index:02}"
  arrival_rate: 20/s
certificate:
  key: p256
  validity_days: 30
telemetry:
  interval: 250ms
  qos: 1
"#;

/// A scrape: the declared families (`# TYPE` lines) and every sample keyed by its series text.
struct Scrape {
    families: BTreeSet<String>,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut families = BTreeSet::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().expect("TYPE has a name");
                families.insert(name.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
                let value = if value == "+Inf" {
                    f64::INFINITY
                } else {
                    value.parse().expect("numeric value")
                };
                samples.insert(series.to_string(), value);
            }
        }
        Self { families, samples }
    }

    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Mid-run and interesting: devices online, publishes timed, messages at the hub.
    fn shows_a_live_fleet(&self) -> bool {
        self.get(r#"fleetsim_devices{state="online"}"#) > 0.0
            && self
                .get(r#"fleetsim_phase_duration_seconds_count{phase="mqtt.publish",outcome="ok"}"#)
                > 0.0
            && self.get("fleetsim_hub_messages_received_total") > 0.0
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<(String, String)> {
    let response = http.get(url).send().await.ok()?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)?
        .to_str()
        .ok()?
        .to_string();
    Some((content_type, response.text().await.ok()?))
}

/// Every `fleetsim_` metric family named in the PromQL of the dashboard's panels.
fn dashboard_families(dashboard: &serde_json::Value) -> BTreeSet<String> {
    fn exprs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    exprs(dashboard, &mut all);
    assert!(!all.is_empty(), "the dashboard has queries");
    let mut families = BTreeSet::new();
    for expr in all {
        let mut rest = expr;
        let mut found = false;
        while let Some(at) = rest.find("fleetsim_") {
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..len];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            families.insert(family.to_string());
            found = true;
            rest = &tail[len..];
        }
        assert!(found, "query names no fleetsim_ metric: {expr}");
    }
    families
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_serves_live_metrics_that_the_dashboard_queries() {
    let scenario =
        fleetsim::scenario::parse(SCENARIO, Path::new("prometheus.yaml")).expect("scenario parses");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let options = RunOptions {
        metrics_listener: Some(Arc::new(listener)),
        ..RunOptions::default()
    };
    let run = tokio::spawn(async move {
        fleet::run(&scenario, &options, std::future::pending())
            .await
            .map(|o| o.report)
    });

    let http = reqwest::Client::new();
    let mut live = None;
    while !run.is_finished() {
        if let Some((content_type, body)) = scrape(&http, &url).await {
            assert!(
                content_type.starts_with("text/plain; version=0.0.4"),
                "{content_type}"
            );
            let s = Scrape::parse(&body);
            if s.shows_a_live_fleet() {
                live = Some(s);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live =
        live.expect("a scrape during the run showed devices online, publishes and hub messages");
    assert!(live.get(r#"fleetsim_messages_total{result="sent"}"#) > 0.0);
    assert!(live.get("fleetsim_ca_certificates_issued_total") > 0.0);
    assert!(live.get("fleetsim_hub_connects_total") > 0.0);
    // Devices register as they arrive (20 over the first second).
    let registered = live.get("fleetsim_hub_devices_registered");
    assert!(
        (1.0..=20.0).contains(&registered),
        "{registered} registered"
    );
    assert_eq!(
        live.get(
            r#"fleetsim_phase_duration_seconds_bucket{phase="ca.issue",outcome="ok",le="+Inf"}"#
        ),
        live.get(r#"fleetsim_phase_duration_seconds_count{phase="ca.issue",outcome="ok"}"#),
    );

    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/fleetsim.json"),
    )
    .expect("dashboards/fleetsim.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let used = dashboard_families(&dashboard);
    let missing: Vec<_> = used.difference(&live.families).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries unknown metrics: {missing:?}"
    );

    let report = run.await.unwrap().expect("run completes");
    assert!(report.messages.sent >= live.get(r#"fleetsim_messages_total{result="sent"}"#) as u64);
    // The endpoint lives only as long as the run.
    assert!(
        scrape(&http, &url).await.is_none(),
        "endpoint closed after the run"
    );
}
