//! The rendered manifests (`kubectl kustomize` of the base and of every overlay): valid for the
//! Kubernetes API (PyPI's kubernetes-validate, strict, offline), and consistent: an Indexed Job
//! whose shard count is the same everywhere it is used, secrets only from Secrets, metrics
//! scraped where they are served, resources as `fleetsim plan-shards` derives them from
//! `BENCHMARKS.md`, and a scenario `fleetsim validate` accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::kube::{self, find};
use crate::common::{python, scratch_dir};

/// The oldest release with everything the Job uses on by default (podFailurePolicy GA in 1.31,
/// backoffLimitPerIndex beta since 1.29) and the newest kubernetes-validate knows.
const VERSIONS: [&str; 2] = ["1.31.0", "1.37.0"];

/// Kinds without a schema in Kubernetes itself (the Prometheus Operator's CRD).
const CUSTOM_KINDS: [&str; 1] = ["PodMonitor"];

/// The base and every overlay.
fn kustomizations() -> Vec<PathBuf> {
    let dir = kube::deploy_dir();
    let mut all = vec![dir.join("base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(dir.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    overlays.sort();
    assert!(overlays.len() >= 2, "local and aks overlays");
    all.extend(overlays);
    all
}

/// kubernetes-validate on `file` for `version`: (passed, its output).
fn validate(file: &Path, version: &str) -> (bool, String) {
    let validator = python().with_file_name("kubernetes-validate");
    let out = Command::new(&validator)
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} runs (./scripts/test installs it): {e}",
                validator.display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_kustomization_validates_against_the_kubernetes_schemas() {
    let dir = scratch_dir("k8s-validate");
    for kustomization in kustomizations() {
        let name = kustomization
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, kube::render_text(&kustomization)).unwrap();
        let resources = kube::render(&kustomization);
        for version in VERSIONS {
            let (passed, text) = validate(&file, version);
            assert!(passed, "{name} against Kubernetes {version}:\n{text}");
            // Every resource was checked against a schema, except the custom kinds.
            let checked = text.matches(" passed for resource ").count();
            let custom = resources
                .iter()
                .filter(|r| CUSTOM_KINDS.iter().any(|k| r["kind"] == *k))
                .count();
            assert_eq!(
                checked + custom,
                resources.len(),
                "{name} {version}:\n{text}"
            );
        }
    }
    // The pod that copies the results volume out is applied on its own.
    let fetch = kube::deploy_dir().join("fetch-results.yaml");
    for version in VERSIONS {
        let (passed, text) = validate(&fetch, version);
        assert!(
            passed && text.contains("passed for resource pod/"),
            "{text}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_validator_rejects_a_broken_job() {
    let dir = scratch_dir("k8s-broken");
    let text = kube::render_text(&kube::deploy_dir().join("overlays/local"));
    for (from, to) in [
        ("backoffLimitPerIndex: 0", "backoffLimitPerIndx: 0"),
        ("completionMode: Indexed", "completionMode: 3"),
    ] {
        assert!(text.contains(from), "{from}");
        let file = dir.join("broken.yaml");
        std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
        let (passed, out) = validate(&file, VERSIONS[1]);
        assert!(!passed, "{to} must not validate:\n{out}");
        assert!(out.contains("job/fleetsim-shards"), "{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// An argument's value (`--name=value`).
fn arg<'a>(container: &'a Value, name: &str) -> &'a str {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {}", container["args"]))
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name}"))
}

#[test]
fn the_jobs_agree_on_the_shard_count_and_take_secrets_from_secrets() {
    for kustomization in kustomizations() {
        let name = kustomization.display().to_string();
        let resources = kube::render(&kustomization);
        let shards = find(&resources, "Job", "fleetsim-shards");
        let spec = &shards["spec"];
        assert_eq!(spec["completionMode"], "Indexed", "{name}");
        assert_eq!(spec["completions"], spec["parallelism"], "{name}");
        assert_eq!(spec["backoffLimitPerIndex"], 0, "{name}");
        assert!(spec["podFailurePolicy"]["rules"].as_array().unwrap().len() >= 2);
        let n = spec["completions"].as_u64().unwrap();
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            arg(container, "--shard"),
            format!("$(JOB_COMPLETION_INDEX)/{n}"),
            "{name}"
        );
        assert_eq!(arg(container, "--start-at"), "$(START_AT)", "{name}");
        let index = &env(container, "JOB_COMPLETION_INDEX")["valueFrom"]["fieldRef"]["fieldPath"];
        assert_eq!(
            index,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        let collector = &find(&resources, "Job", "fleetsim-collector")["spec"]["template"]["spec"]
            ["containers"][0];
        assert_eq!(arg(collector, "--expect"), n.to_string(), "{name}");
        assert_eq!(arg(collector, "--start-at"), "$(START_AT)", "{name}");
        // Secrets only ever come from a Secret.
        for c in [container, collector] {
            for secret in [
                "EZCA_TOKEN",
                "IOTHUB_CONNECTION_STRING",
                "FLEETSIM_COLLECT_TOKEN",
            ] {
                let found = c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == secret);
                if let Some(e) = found {
                    assert!(
                        e.get("value").is_none(),
                        "{name}: {secret} is never written down"
                    );
                    assert!(
                        e["valueFrom"]["secretKeyRef"].is_object(),
                        "{name}: {secret}"
                    );
                }
            }
        }
        // The report goes to the collector's Service.
        let service = find(&resources, "Service", "fleetsim-collector");
        let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
        assert_eq!(
            arg(container, "--report-to"),
            format!("http://fleetsim-collector:{port}/reports")
        );
        assert_eq!(arg(collector, "--listen"), format!("0.0.0.0:{port}"));
        check_metrics(&resources, shards, &name);
        check_scenario_and_resources(&resources, pod, n, &name);
    }
}

/// The headless Service gives the shard pods DNS names, and metrics are scraped where
/// `--metrics-addr` serves them (annotations, and the PodMonitor where there is one).
fn check_metrics(resources: &[Value], shards: &Value, name: &str) {
    let template = &shards["spec"]["template"];
    let pod = &template["spec"];
    let container = &pod["containers"][0];
    let headless = find(resources, "Service", "fleetsim-shards");
    assert_eq!(headless["spec"]["clusterIP"], "None", "{name}");
    assert_eq!(pod["subdomain"], "fleetsim-shards", "{name}");
    let labels = template["metadata"]["labels"].as_object().unwrap();
    let selects = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(selects(&headless["spec"]["selector"]), "{name}");
    let served = arg(container, "--metrics-addr")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], served.as_str(), "{name}");
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
    let port = &container["ports"][0];
    assert_eq!(
        port["containerPort"].as_u64().unwrap().to_string(),
        served,
        "{name}"
    );
    for monitor in resources.iter().filter(|r| r["kind"] == "PodMonitor") {
        assert!(
            selects(&monitor["spec"]["selector"]["matchLabels"]),
            "{name}"
        );
        let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
        assert_eq!(endpoint["port"], port["name"], "{name}");
        assert_eq!(endpoint["path"], "/metrics", "{name}");
    }
}

/// The scenario in the ConfigMap validates, and the pods' resources are what `fleetsim
/// plan-shards` derives for it from BENCHMARKS.md at its devices per pod.
fn check_scenario_and_resources(resources: &[Value], pod: &Value, n: u64, name: &str) {
    let dir = scratch_dir("k8s-scenario");
    let map = find(resources, "ConfigMap", "fleetsim-scenario");
    let file = dir.join("scenario.yaml");
    std::fs::write(&file, map["data"]["scenario.yaml"].as_str().unwrap()).unwrap();
    let fleetsim = env!("CARGO_BIN_EXE_fleetsim");
    let valid = Command::new(fleetsim)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        valid.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&valid.stderr)
    );
    let scenario = fleetsim::scenario::load(&file).unwrap();
    let per_pod = u64::from(scenario.fleet.devices.get()).div_ceil(n);
    let plan = fleetsim::distributed::sizing::plan(&scenario, per_pod);
    assert_eq!(
        u64::from(plan.pods),
        n,
        "{name}: the shard count fits the fleet"
    );
    let r = &pod["containers"][0]["resources"];
    assert_eq!(
        r["requests"]["memory"],
        format!("{}Mi", plan.memory_request_mib),
        "{name}"
    );
    assert_eq!(
        r["limits"]["memory"],
        format!("{}Mi", plan.memory_limit_mib),
        "{name}"
    );
    assert_eq!(
        r["requests"]["cpu"],
        format!("{}m", plan.cpu_millis),
        "{name}"
    );
    assert!(
        r["limits"].get("cpu").is_none(),
        "{name}: no CPU limit (throttling is latency)"
    );
    std::fs::remove_dir_all(&dir).ok();
}
