//! Every shipped scenario in `scenarios/` runs in its smoke form (`fleetsim run --smoke`: at most
//! 10 devices for 10 s, its shape kept) against the embedded emulators, and must pass its own
//! thresholds. A scenario whose target is remote cannot run alone: it is validated and planned
//! (`fleetsim plan-shards`) instead, and named here as such. None is skipped silently: a new
//! scenario is picked up by reading the directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetsim::scenario::Scenario;
use fleetsim::scenario::thresholds::Metric;

use crate::common;

/// A smoke run lasts 10 s plus setup and drain; RSA keys and a loaded 2-core machine add slack.
const RUN_LIMIT: Duration = Duration::from_secs(150);
/// Child processes at once: each holds a fleet and its emulators, mostly waiting.
const PARALLEL: usize = 6;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_scenarios() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "scenarios/ has {} files", files.len());
    files
}

/// Runs `file` in smoke form; `Err` says why it failed, with the run's output.
fn smoke_run(file: &Path, dir: &Path) -> Result<(), String> {
    let name = file.file_stem().unwrap().to_string_lossy().into_owned();
    let report = dir.join(format!("{name}.json"));
    // Scenarios with `key_source: pool` use a pool of their own, not the user's.
    let keys = dir.join(format!("keys-{name}"));
    let mut extra = Vec::new();
    if name == "seed-sample" {
        // RSA-4096 keys from a pool filled first, as the README says to; 3 devices keep the
        // keys' cost (~1 s each, more on a loaded machine) small.
        fill_pool(&keys, "rsa-4096", 3)?;
        extra.extend(["--max-devices", "3"]);
    }
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .current_dir(repo())
            .args(["run", "--smoke", "--quiet"])
            .args(&extra)
            .arg("--report")
            .arg(&report)
            .arg(file)
            .env("FLEETSIM_KEY_DIR", &keys),
        RUN_LIMIT,
    );
    let says = || {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Exit status 1 is a failed threshold, judged below; anything else is a failed run.
    if !out.status.success() && out.status.code() != Some(1) {
        return Err(format!("{name}: {} in smoke form:\n{}", out.status, says()));
    }
    let json: serde_json::Value = std::fs::read(&report)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{name}: report {}: {e}", report.display()))?;
    let scenario = fleetsim::scenario::load(file).unwrap();
    judge(&json, &scenario).map_err(|e| format!("{name}: {e}\n{}", says()))?;
    if json["devices"]["connected"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("{name}: no device connected:\n{}", says()));
    }
    Ok(())
}

/// Every threshold of `scenario` was judged in `report`; all pass, except that a latency
/// threshold may miss its limit (with samples): latencies are performance, measured on a quiet
/// machine (BENCHMARKS.md), not asserted on a shared 2-core one. A latency threshold without
/// samples fails: then the smoke form did not do what the scenario measures.
pub fn judge(report: &serde_json::Value, scenario: &Scenario) -> Result<(), String> {
    let judged = report["thresholds"].as_array().cloned().unwrap_or_default();
    if judged.len() != scenario.thresholds.len() {
        return Err(format!(
            "{} thresholds judged of {} written",
            judged.len(),
            scenario.thresholds.len()
        ));
    }
    let mut failed = Vec::new();
    for (t, result) in scenario.thresholds.iter().zip(&judged) {
        let actual = result["actual"].as_str().unwrap_or_default();
        let latency = matches!(t.metric, Metric::Latency { .. });
        match (result["pass"] == true, latency && actual != "no samples") {
            (true, _) => {}
            (false, true) => eprintln!("latency over its limit (not a failure here): {result}"),
            (false, false) => failed.push(result.to_string()),
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(format!("thresholds failed: {}", failed.join(", "))),
    }
}

/// `fleetsim keys generate --kind KIND --count N` into the pool at `keys`.
fn fill_pool(keys: &Path, kind: &str, count: u32) -> Result<(), String> {
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args([
                "keys",
                "generate",
                "--kind",
                kind,
                "--count",
                &count.to_string(),
            ])
            .env("FLEETSIM_KEY_DIR", keys),
        RUN_LIMIT,
    );
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "keys generate: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// A remote scenario: valid, and `plan-shards` sizes it.
fn validate_and_plan(file: &Path) -> Result<(), String> {
    for args in [
        vec!["validate"],
        vec!["plan-shards", "--devices-per-pod", "5000"],
    ] {
        let out = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_fleetsim"))
                .current_dir(repo())
                .args(&args)
                .arg(file),
            Duration::from_secs(30),
        );
        if !out.status.success() {
            return Err(format!(
                "{}: fleetsim {} failed: {}",
                file.display(),
                args[0],
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

#[test]
fn every_shipped_scenario_passes_its_thresholds_in_smoke_form() {
    let dir = common::scratch_dir("scenario-smoke");
    let mut embedded = Vec::new();
    let mut remote = Vec::new();
    for file in shipped_scenarios() {
        let s = fleetsim::scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
        match fleetsim::scenario::smoke::is_embedded(&s) {
            true => embedded.push(file),
            false => remote.push(file),
        }
    }
    // The remote ones run against `fleetsim emulate` on fixed ports (see README.md): here they
    // are checked as far as they go without a service.
    assert_eq!(
        remote
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["fleet-10k.yaml"],
        "a new remote scenario: say here how it is checked"
    );
    let mut failures: Vec<String> = remote
        .iter()
        .filter_map(|f| validate_and_plan(f).err())
        .collect();

    let queue = Arc::new(Mutex::new(embedded));
    let found = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (queue, found, dir) = (queue.clone(), found.clone(), dir.clone());
            std::thread::spawn(move || {
                loop {
                    let Some(file) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if let Err(e) = smoke_run(&file, &dir) {
                        found.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    failures.extend(found.lock().unwrap().drain(..));
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
