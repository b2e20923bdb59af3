//! The start barrier (`fleetsim run --start-at`): a process that is early waits for it; one
//! that is late starts from it all the same, so its devices whose slots have passed start late
//! and are counted as such, and its report says how late it was; one ready only after the
//! run's end fails instead of reporting a fleet that never came.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use fleetsim::fleet::{self, RunOptions};

const SCENARIO: &str = r#"
name: barrier
seed: 3
duration: 3s
target:
  embedded: {}
fleet:
  devices: 20
  arrival_rate: 10/s
telemetry:
  interval: 1s
"#;

async fn run_from(start_at: SystemTime) -> Result<fleetsim::report::Report, fleet::FleetError> {
    let scenario = fleetsim::scenario::parse(SCENARIO, Path::new("barrier.yaml")).unwrap();
    let options = RunOptions {
        shard: "1/2".parse().unwrap(),
        start_at: Some(start_at),
        ..RunOptions::default()
    };
    let run = fleet::run(&scenario, &options, std::future::pending());
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends by itself")
        .map(|o| o.report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_shard_waits_for_the_barrier() {
    let begun = Instant::now();
    // The barrier is far enough ahead that even a loaded 2-core machine prepares the run
    // (emulators, TLS, tokens) before it: at 1.5 s the shard was now and then 50 ms late.
    let report = run_from(SystemTime::now() + Duration::from_secs(4))
        .await
        .unwrap();
    assert!(
        begun.elapsed() >= Duration::from_secs(7),
        "4 s wait + 3 s run"
    );
    let barrier = report.start_barrier.expect("the report names its barrier");
    assert_eq!(barrier.late_seconds, 0.0);
    assert!(barrier.late_shards.is_empty());
    assert_eq!(
        report.started_at, barrier.at,
        "the run's start is the barrier"
    );
    assert_eq!(report.devices.started, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_shard_starts_from_the_barrier_and_counts_its_devices_late() {
    // Slots of this shard's devices (every other of 20 at 10/s): 0.1 s, 0.3 s, … 1.9 s.
    let report = run_from(SystemTime::now() - Duration::from_millis(1500))
        .await
        .unwrap();
    let barrier = report.start_barrier.clone().expect("a barrier");
    assert!(barrier.late_seconds >= 1.5, "{barrier:?}");
    assert_eq!(barrier.late_shards, vec!["1/2".to_string()]);
    assert!(
        report.to_text().contains("1/2 late by up to"),
        "{}",
        report.to_text()
    );
    assert_eq!(report.devices.started, 10);
    // The 8 whose slots (before 1.5 s) had passed start late; the others are due later.
    assert!(report.devices.late >= 8, "{:?}", report.devices);
    let late = report
        .phases
        .iter()
        .find(|p| p.phase == "arrival.late")
        .expect("lateness recorded");
    assert_eq!(late.latency.count, report.devices.late);
    assert!(
        late.latency.max_ms >= 1000.0,
        "the first device is ~1.4 s late: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_ready_after_the_runs_end_fails() {
    let e = run_from(SystemTime::now() - Duration::from_secs(10))
        .await
        .expect_err("nothing to run");
    assert!(e.to_string().contains("already over"), "{e}");
}
