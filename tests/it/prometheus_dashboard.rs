//! The Grafana dashboard against a real Prometheus: Debian's `prometheus` scrapes a live run's
//! `/metrics` every second, and every PromQL expression of `dashboards/fleetsim.json` must return
//! data through Prometheus's query API. The run has something in every panel: the CA fails a share
//! of issuances (errors, and the EZCA client's own retries), renewals happen, and a revocation
//! event gives the dashboard's annotation (`fleetsim_events_total`) something to mark.
//!
//! The check itself must be able to fail: an expression over a metric fleetsim does not export
//! returns nothing and is reported as such.
//!
//! Needs `prometheus` on the PATH (`./scripts/test` installs Debian's package).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsim::fleet::{self, RunOptions};
use serde_json::Value;

const SCENARIO: &str = r#"
name: prometheus-dashboard
seed: 13
duration: 16s
time_scale: 1s
target:
  embedded:
    ca:
      error_rate: 20%
      client_retry: [100ms]
fleet:
  devices: 40
  id_pattern: "dash-{index:02}"
  arrival_rate: 20/s
certificate:
  key: p256
  validity_days: 8
  renew_at: 50%
telemetry:
  interval: 500ms
  qos: 1
events:
  # Late enough that Prometheus has scraped the counters at 0 a few times even on a loaded
  # machine, where early scrapes of a run still setting up can time out: the annotation needs
  # a sample before the change.
  - at: 8s
    revoke: 10%
    method: admin
"#;

/// Every `expr` of the dashboard's panels (nested rows included).
fn dashboard_expressions() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/fleetsim.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut found = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let title = panel["title"].as_str().unwrap_or("?").to_string();
                found.push((title, expr.to_string()));
            }
        }
    }
    // The annotations' queries too (the scenario's events).
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = annotation["name"].as_str().unwrap_or("?");
            found.push((format!("annotation {name}"), expr.to_string()));
        }
    }
    found
}

struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts Prometheus scraping `target` (host:port) every second.
fn start_prometheus(target: &str) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("fleetsim-prom-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fleetsim\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is not installed: ./scripts/test installs Debian's package");
    Prometheus {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits until Prometheus answers `/-/ready` (it opens its storage first).
async fn wait_ready(client: &reqwest::Client, prometheus: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ready = client.get(format!("{prometheus}/-/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("prometheus did not get ready within 20 s");
}

/// How many series `expr` returns over the last two minutes, as Grafana evaluates a panel or
/// an annotation over the dashboard's time range (so an event's `changes(...[15s])` counts even
/// if a loaded machine polls after its window); an error when Prometheus refuses it.
async fn series(client: &reqwest::Client, prometheus: &str, expr: &str) -> Result<usize, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let (start, end) = ((now - 120.0).to_string(), now.to_string());
    let answer = client
        .get(format!("{prometheus}/api/v1/query_range"))
        .query(&[
            ("query", expr),
            ("start", &start),
            ("end", &end),
            ("step", "1"),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = answer.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
}

/// The expressions of `exprs` that return no data before `deadline`.
async fn without_data(
    client: &reqwest::Client,
    prometheus: &str,
    exprs: &[(String, String)],
    deadline: Instant,
) -> Vec<String> {
    let mut missing: Vec<&(String, String)> = exprs.iter().collect();
    loop {
        let mut still = Vec::new();
        for e in missing {
            if series(client, prometheus, &e.1).await.unwrap_or(0) == 0 {
                still.push(e);
            }
        }
        missing = still;
        if missing.is_empty() || Instant::now() >= deadline {
            return missing.iter().map(|(t, e)| format!("{t}: {e}")).collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let exprs = dashboard_expressions();
    assert!(exprs.len() >= 15, "the dashboard's queries: {exprs:?}");
    let scenario = fleetsim::scenario::parse(SCENARIO, Path::new("dash.yaml")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let options = RunOptions {
        metrics_listener: Some(Arc::new(listener)),
        ..RunOptions::default()
    };
    let prometheus = start_prometheus(&target);
    let client = reqwest::Client::new();
    // Scraping from before the run starts, so the first event is a change Prometheus sees.
    wait_ready(&client, &prometheus.url).await;
    let run =
        tokio::spawn(
            async move { fleet::run(&scenario, &options, std::future::pending::<()>()).await },
        );
    // Rates need two scrapes inside their window; the run lasts 16 s, scrapes come every second.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Polling stops as soon as every query has data; the margin is for a loaded machine, where
    // the run's setup (and so its 5 s event) comes late.
    let deadline = Instant::now() + Duration::from_secs(25);
    let missing = without_data(&client, &prometheus.url, &exprs, deadline).await;
    // A query of a metric fleetsim does not export finds nothing, and the check says so.
    let bogus = vec![(
        "bogus".to_string(),
        "sum(rate(fleetsim_no_such_metric_total[1m]))".to_string(),
    )];
    let found_bogus = without_data(&client, &prometheus.url, &bogus, Instant::now()).await;
    let outcome = run.await.unwrap().unwrap();
    assert!(
        missing.is_empty(),
        "dashboard queries without data: {missing:#?}"
    );
    assert_eq!(found_bogus.len(), 1, "a missing metric must fail the check");
    assert!(
        outcome.report.total_errors() > 0,
        "the run had errors to show"
    );
}
