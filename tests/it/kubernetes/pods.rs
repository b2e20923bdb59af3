//! The pods of `deploy/kubernetes/overlays/local`, as rendered, run as local processes against
//! `fleetsim emulate`: the collector Job's pod and the Indexed Job's N pods, each with its
//! command line exactly as `kubectl kustomize` gives it (`JOB_COMPLETION_INDEX` per process,
//! `$(VAR)`s expanded, ConfigMaps and the Secret as the cluster would hold them, volumes as
//! directories, the collector's Service name mapped to where it listens here). The only change
//! is the one a user makes in an overlay on top: the scenario (aimed at this test's emulator)
//! and the collector's grace.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::kube::{self, Cluster, find};
use crate::common::{Watched, output_within, scratch_dir};

/// How long before the start barrier the pods are started: time for every process to start,
/// read its scenario and reach the emulator on a loaded 2-core machine.
const LEAD: Duration = Duration::from_secs(8);
const LIMIT: Duration = Duration::from_secs(120);

/// `fleetsim emulate` on free loopback ports, and what a cluster would hold of it.
struct Emulator {
    /// Serves while this lives; dropping it stops the emulator.
    _process: Watched,
    dir: PathBuf,
}

impl Emulator {
    fn start(dir: PathBuf) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
        command.arg("emulate");
        for port in [
            "--ca-port",
            "--mqtt-port",
            "--websocket-port",
            "--registry-port",
            "--amqp-port",
        ] {
            command.args([port, "0"]);
        }
        command.args(["--no-dps", "--dir"]).arg(&dir);
        let mut process = Watched::spawn(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            "fleetsim emulate",
        );
        process.read_until("ready", Duration::from_secs(30));
        Self {
            _process: process,
            dir,
        }
    }

    /// The Secret fleetsim-credentials, made from the emulator's files as the README says.
    fn credentials(&self) -> BTreeMap<String, String> {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap();
        BTreeMap::from([
            ("EZCA_TOKEN".to_string(), read("ezca-token")),
            (
                "IOTHUB_CONNECTION_STRING".to_string(),
                read("hub-connection-string"),
            ),
        ])
    }

    fn target(&self) -> String {
        std::fs::read_to_string(self.dir.join("target.yaml")).unwrap()
    }
}

/// 20 devices, all arriving in the first half second, 2 messages each: sent once connected and
/// 5 s later, the next one due after the 9 s run, so the totals do not depend on timing (a
/// device may take up to 4 s to enrol and connect on a loaded machine).
fn scenario(target: &str, ids: &str, extra_threshold: &str) -> String {
    format!(
        "name: k8s-pods\nseed: 16\nduration: 9s\n{target}fleet:\n  devices: 20\n  id_pattern: \"{ids}-{{index:03}}\"\n  arrival_rate: 40/s\ntelemetry:\n  interval: 5s\n  qos: 1\nthresholds:\n  - failed_devices == 0\n  - errors rate < 1%\n{extra_threshold}"
    )
}

/// The user's overlay on top of the local one: this scenario, and `grace`.
fn overlay(dir: &Path, scenario: &str, grace: &str) -> PathBuf {
    let overlay = dir.join("overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(overlay.join("scenario.yaml"), scenario).unwrap();
    // kustomize takes only relative roots: up to `/` from the overlay, then down to ours.
    let up = "../".repeat(overlay.components().count() - 1);
    let local = kube::deploy_dir().join("overlays/local");
    let local = format!(
        "{up}{}",
        local.display().to_string().trim_start_matches('/')
    );
    let kustomization = format!(
        "resources:\n  - {}\nconfigMapGenerator:\n  - name: fleetsim-scenario\n    behavior: replace\n    files: [scenario.yaml]\npatches:\n  - patch: |\n      apiVersion: batch/v1\n      kind: Job\n      metadata: {{name: fleetsim-collector}}\n      spec:\n        template:\n          spec:\n            containers:\n              - name: collector\n                env:\n                  - {{name: GRACE, value: {grace}}}\n",
        local
    );
    std::fs::write(overlay.join("kustomization.yaml"), kustomization).unwrap();
    overlay
}

/// The running pods of one run.
struct Pods {
    collector: Watched,
    shards: Vec<Watched>,
    /// The results volume (PVC fleetsim-results).
    results: PathBuf,
    start_at: String,
}

/// Starts the collector's pod, then every shard's, as the rendered manifests say.
fn launch(root: &Path, resources: &[Value], credentials: BTreeMap<String, String>) -> Pods {
    let start_at = (time::OffsetDateTime::now_utc() + LEAD)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut cluster = Cluster {
        made: BTreeMap::from([
            (
                "fleetsim-start".to_string(),
                BTreeMap::from([("START_AT".to_string(), start_at.clone())]),
            ),
            ("fleetsim-credentials".to_string(), credentials),
        ]),
        services: BTreeMap::new(),
        root: root.to_path_buf(),
    };
    let collector_job = find(resources, "Job", "fleetsim-collector");
    let pod = cluster.pod_command(resources, collector_job, "fleetsim-collector-0", 0);
    let collector_out = root.join("collector.out");
    let collector = spawn(
        &pod,
        &collector_out,
        root.join("collector.err"),
        "collector",
    );
    let line = wait_for_line(&collector_out, "fleetsim collect: listening on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let port = find(resources, "Service", "fleetsim-collector")["spec"]["ports"][0]["port"].clone();
    cluster
        .services
        .insert(format!("fleetsim-collector:{port}"), addr.to_string());

    let job = find(resources, "Job", "fleetsim-shards");
    let n = job["spec"]["completions"].as_u64().unwrap() as u32;
    let shards = (0..n)
        .map(|i| {
            let name = format!("fleetsim-shards-{i}");
            let pod = cluster.pod_command(resources, job, &name, i);
            assert!(
                pod.args.contains(&format!("--shard={i}/{n}")),
                "{:?}",
                pod.args
            );
            let out = root.join(format!("{name}.out"));
            spawn(&pod, &out, root.join(format!("{name}.err")), &name)
        })
        .collect();
    Pods {
        collector,
        shards,
        results: root.join("pvc/fleetsim-results"),
        start_at,
    }
}

fn spawn(pod: &kube::PodCommand, out: &Path, err: PathBuf, what: &str) -> Watched {
    Watched::spawn(
        Command::new(&pod.program)
            .args(&pod.args)
            .env_clear()
            .envs(&pod.env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(File::create(out).unwrap())
            .stderr(File::create(err).unwrap()),
        what,
    )
}

/// The first line of `file` starting with `prefix`, waiting for it to be written.
fn wait_for_line(file: &Path, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} in {}:\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// What a process printed, for failure messages.
fn printed(root: &Path, name: &str) -> String {
    let read =
        |ext| std::fs::read_to_string(root.join(format!("{name}.{ext}"))).unwrap_or_default();
    format!(
        "--- {name} stdout\n{}\n--- {name} stderr\n{}",
        read("out"),
        read("err")
    )
}

/// The scenario run in one process against an emulator of its own: its report.
fn run_single(root: &Path) -> Value {
    let emulator = Emulator::start(root.join("emulator-single"));
    let file = root.join("single.yaml");
    std::fs::write(&file, scenario(&emulator.target(), "k8s", "")).unwrap();
    let report = root.join("single.json");
    let single = output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["run", "--quiet", "--report"])
            .arg(&report)
            .arg(&file)
            .envs(emulator.credentials()),
        LIMIT,
    );
    assert!(
        single.status.success(),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    read_json(&report)
}

/// The merged report counts what the single process counted: devices, cohorts, messages and
/// operations per phase.
fn assert_same_counts(merged: &Value, one: &Value) {
    for field in ["planned", "started", "enrolled", "connected", "failed"] {
        assert_eq!(
            merged["devices"][field], one["devices"][field],
            "devices.{field}"
        );
    }
    assert_eq!(merged["devices"]["connected"], 20);
    assert_eq!(merged["cohorts"], one["cohorts"]);
    assert_eq!(merged["messages"], one["messages"]);
    assert_eq!(merged["messages"]["acked"], 40, "2 messages per device");
    let count = |r: &Value, phase: &str| {
        r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["phase"] == phase)
            .map(|p| p["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    for phase in [
        "ca.issue",
        "hub.register",
        "mqtt.connect",
        "mqtt.publish",
        "first_telemetry",
    ] {
        assert_eq!(count(merged, phase), count(one, phase), "{phase}");
    }
}

#[test]
fn the_rendered_pods_merge_to_what_one_process_reports() {
    let root = scratch_dir("k8s-pods");
    // The same scenario in one process first, against an emulator of its own (same device ids).
    let one = run_single(&root);

    let emulator = Emulator::start(root.join("emulator"));
    let overlay = overlay(&root, &scenario(&emulator.target(), "k8s", ""), "30s");
    let resources = kube::render(&overlay);
    let mut pods = launch(&root, &resources, emulator.credentials());
    for (i, shard) in pods.shards.iter_mut().enumerate() {
        let status = shard.wait_within(LIMIT);
        let name = format!("fleetsim-shards-{i}");
        assert!(status.success(), "{}", printed(&root, &name));
    }
    let verdict = pods.collector.wait_within(LIMIT);
    let collector = printed(&root, "collector");
    assert!(
        verdict.success(),
        "the merged thresholds pass:\n{collector}"
    );
    assert!(collector.contains("verdict: PASS"), "{collector}");

    let merged = read_json(&pods.results.join("merged.json"));
    assert_eq!(merged["merged_from"].as_array().unwrap().len(), 4);
    assert_eq!(merged["start_barrier"]["at"], pods.start_at.as_str());
    assert_same_counts(&merged, &one);
    let thresholds = merged["thresholds"].as_array().unwrap();
    assert_eq!(
        thresholds.len(),
        2,
        "the scenario's, checked on the merged figures"
    );
    assert!(
        thresholds.iter().all(|t| t["pass"] == true),
        "{thresholds:?}"
    );

    // The merged figures decide: a threshold no run can meet fails the same shards' verdict.
    let strict = root.join("strict.yaml");
    let text = scenario(&emulator.target(), "k8s", "  - first_telemetry max < 1ms\n");
    std::fs::write(&strict, text).unwrap();
    let judged = output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["report", "--expect", "4", "--thresholds"])
            .arg(&strict)
            .arg(pods.results.join("shards")),
        LIMIT,
    );
    let out = String::from_utf8_lossy(&judged.stdout);
    assert_eq!(judged.status.code(), Some(1), "{out}");
    assert!(
        out.contains("threshold failed: first_telemetry max < 1ms"),
        "{out}"
    );
    drop(emulator);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_killed_shard_fails_the_verdict_naming_it() {
    let root = scratch_dir("k8s-killed");
    let emulator = Emulator::start(root.join("emulator"));
    let overlay = overlay(&root, &scenario(&emulator.target(), "killed", ""), "3s");
    let resources = kube::render(&overlay);
    let mut pods = launch(&root, &resources, emulator.credentials());
    // Killed (as the OOM killer or a lost node would) once its devices are running.
    std::thread::sleep(LEAD + Duration::from_secs(2));
    pods.shards[2].kill();
    for i in [0, 1, 3] {
        let status = pods.shards[i].wait_within(LIMIT);
        assert!(
            status.success(),
            "{}",
            printed(&root, &format!("fleetsim-shards-{i}"))
        );
    }
    let verdict = pods.collector.wait_within(LIMIT);
    let collector = printed(&root, "collector");
    assert_eq!(verdict.code(), Some(1), "{collector}");
    assert!(collector.contains("verdict: FAIL"), "{collector}");
    assert!(
        collector.contains("1 of 4 shards never reported: 2/4"),
        "{collector}"
    );
    // What did arrive is merged and kept, for a look at what went wrong.
    let merged = read_json(&pods.results.join("merged.json"));
    assert_eq!(merged["merged_from"].as_array().unwrap().len(), 3);
    assert_eq!(merged["devices"]["planned"], 15);
    drop(emulator);
    std::fs::remove_dir_all(&root).ok();
}
