//! Sharding: `--shard i/n` runs a deterministic slice of the fleet. Two shards together run the
//! same devices (ids from the seed, cohorts) as one unsharded run, their reports merge into the
//! unsharded counts, each report records its shard, and a bad `--shard` is refused.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use fleetsim::fleet::{self, RunOptions, Shard};
use fleetsim::report::Report;

const SCENARIO: &str = r#"
name: shards
seed: 11
duration: 2s
target:
  embedded: {}
fleet:
  devices: 12
  id_pattern: "{uuid}"
  arrival_rate: 24/s
  cohorts:
    - {name: small, share: 75%}
    - {name: big, share: 25%, telemetry: {interval: 250ms}}
telemetry:
  interval: 500ms
"#;

async fn run(shard: Shard) -> (BTreeSet<String>, Report) {
    let scenario = fleetsim::scenario::parse(SCENARIO, Path::new("shards.yaml")).unwrap();
    let options = RunOptions {
        shard,
        ..RunOptions::default()
    };
    let outcome = fleet::run(&scenario, &options, std::future::pending())
        .await
        .expect("run completes");
    let ids = outcome.devices.iter().map(|d| d.id.clone()).collect();
    (ids, outcome.report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_run_exactly_the_unsharded_fleet() {
    let (all_ids, whole) = run(Shard::WHOLE).await;
    let (ids0, r0) = run("0/2".parse().unwrap()).await;
    let (ids1, r1) = run("1/2".parse().unwrap()).await;

    assert_eq!(all_ids.len(), 12);
    assert!(ids0.is_disjoint(&ids1), "a device ran in both shards");
    let union: BTreeSet<String> = ids0.union(&ids1).cloned().collect();
    assert_eq!(union, all_ids, "the shards ran the unsharded run's devices");
    // Each cohort splits evenly: 9 small as 5 + 4, 3 big as 2 + 1.
    assert_eq!((ids0.len(), ids1.len()), (7, 5));

    assert_eq!(whole.shard, None);
    assert_eq!(r0.shard.as_deref(), Some("0/2"));
    assert_eq!(r1.shard.as_deref(), Some("1/2"));
    assert!(r0.to_text().contains("shard 0/2"));

    let merged = fleetsim::report::merge(&[r0, r1]).expect("shard reports merge");
    let counts = |r: &Report| {
        (
            r.devices.planned,
            r.devices.started,
            r.devices.enrolled,
            r.devices.connected,
            r.devices.failed,
        )
    };
    assert_eq!(counts(&merged), (12, 12, 12, 12, 0));
    assert_eq!(counts(&merged), counts(&whole));
    assert_eq!(merged.cohorts, whole.cohorts, "cohort counts agree");
    assert_eq!(
        merged.cohorts.iter().map(|c| c.planned).collect::<Vec<_>>(),
        vec![9, 3]
    );
}

#[test]
fn a_bad_shard_is_refused() {
    let dir = std::env::temp_dir().join(format!("fleetsim-shard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("shards.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let run = |shard: &str| {
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["run", "--quiet", "--shard", shard])
            .arg(&scenario)
            .current_dir(&dir)
            .output()
            .expect("fleetsim runs")
    };
    let out = run("3/2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--shard 3/2: the index must be below the count (0/2 to 1/2)"),
        "{stderr}"
    );
    let out = run("0/20");
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!out.status.success());
    assert!(
        stderr.contains("the fleet has 12 devices, fewer than the 20 shards"),
        "{stderr}"
    );
}
