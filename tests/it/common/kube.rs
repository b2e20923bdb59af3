//! The Kubernetes manifests of `deploy/kubernetes` as a test sees them: rendered by
//! `kubectl kustomize`, and their pods' command lines made into local processes the way the
//! kubelet would make them (env from values, ConfigMaps, Secrets and the completion index,
//! `$(VAR)` expanded, volumes as directories, the cluster's Service names and listen
//! addresses mapped onto loopback).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The repository's `deploy/kubernetes`.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// kubectl with kustomize v5: the machine's, or the one `./scripts/test` unpacked into
/// `target/peers/bin`; fails the test saying how to get one otherwise (never skips).
pub fn kubectl() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/bin/kubectl");
    for candidate in [PathBuf::from("kubectl"), local] {
        let version = Command::new(&candidate)
            .args(["version", "--client"])
            .output();
        if let Ok(out) = version
            && String::from_utf8_lossy(&out.stdout).contains("Kustomize Version: v5")
        {
            return candidate;
        }
    }
    panic!(
        "kubectl with kustomize v5 is missing: run ./scripts/test (it installs one into \
         target/peers/bin), or install kubectl >= 1.27"
    )
}

/// `kubectl kustomize dir`, as text.
pub fn render_text(dir: &Path) -> String {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 manifests")
}

/// The rendered resources of `dir`.
pub fn render(dir: &Path) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&render_text(dir)).expect("kustomize renders YAML")
}

/// The resource of `kind` named `name` (a generated ConfigMap by its name before the hash).
pub fn find<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| {
            let n = r["metadata"]["name"].as_str().unwrap_or("");
            r["kind"] == kind
                && (n == name || n.strip_prefix(name).is_some_and(|s| s.starts_with('-')))
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

/// What the cluster would give a pod that the manifests do not hold: Secrets, the ConfigMaps
/// made at apply time (`fleetsim-start`, `fleetsim-trust`), and where Services really are.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    /// ConfigMap or Secret name → key → value.
    pub made: BTreeMap<String, BTreeMap<String, String>>,
    /// `name:port` of a Service → `127.0.0.1:port` where its pod listens here.
    pub services: BTreeMap<String, String>,
    /// Where the volumes of the pods live (one directory per pod, PVCs shared).
    pub root: PathBuf,
}

/// One pod's container as a local command.
#[derive(Debug)]
pub struct PodCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Cluster {
    /// The first container of `job`'s pod `index` (its completion index) as a local command.
    pub fn pod_command(
        &self,
        resources: &[Value],
        job: &Value,
        pod: &str,
        index: u32,
    ) -> PodCommand {
        let spec = &job["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let mut env = BTreeMap::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().expect("env name").to_string();
            if let Some(value) = self.env_value(resources, var, index, &env) {
                env.insert(name, value);
            }
        }
        let mounts = self.mount_volumes(resources, spec, container, pod);
        let expand = |s: &str| self.localise(&expand_vars(s, &env), &mounts);
        let mut command: Vec<String> = container["command"]
            .as_array()
            .expect("the manifests name the command")
            .iter()
            .map(|c| c.as_str().expect("command text").to_string())
            .collect();
        command.extend(
            container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().expect("args are text").to_string()),
        );
        assert_eq!(command[0], "/usr/local/bin/fleetsim", "the image's binary");
        PodCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_fleetsim")),
            args: command[1..].iter().map(|a| expand(a)).collect(),
            env,
        }
    }

    /// A variable's value as the kubelet resolves it; none for a missing optional reference.
    fn env_value(
        &self,
        resources: &[Value],
        var: &Value,
        index: u32,
        earlier: &BTreeMap<String, String>,
    ) -> Option<String> {
        if let Some(v) = var["value"].as_str() {
            return Some(expand_vars(v, earlier));
        }
        let from = &var["valueFrom"];
        if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            assert_eq!(
                path, "metadata.annotations['batch.kubernetes.io/job-completion-index']",
                "the only field the pods read"
            );
            return Some(index.to_string());
        }
        let (reference, kind) = match (&from["configMapKeyRef"], &from["secretKeyRef"]) {
            (r, _) if r.is_object() => (r, "ConfigMap"),
            (_, r) if r.is_object() => (r, "Secret"),
            _ => panic!("unexpected env source {var}"),
        };
        let (name, key) = (reference["name"].as_str()?, reference["key"].as_str()?);
        let value = self.lookup(resources, kind, name, key);
        if value.is_none() && reference["optional"] != true {
            panic!("{kind} {name} has no {key}, and the pod needs it");
        }
        value
    }

    /// A key of a ConfigMap in the manifests, or of one the cluster was given.
    fn lookup(&self, resources: &[Value], kind: &str, name: &str, key: &str) -> Option<String> {
        if let Some(made) = self.made.get(name) {
            return made.get(key).cloned();
        }
        let found = resources
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"].as_str() == Some(name))?;
        found["data"][key].as_str().map(str::to_string)
    }

    /// Makes the pod's volumes as directories: mount path → local directory.
    fn mount_volumes(
        &self,
        resources: &[Value],
        spec: &Value,
        container: &Value,
        pod: &str,
    ) -> Vec<(String, PathBuf)> {
        let mut mounts = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().expect("mount name");
            let path = mount["mountPath"].as_str().expect("mount path").to_string();
            let volume = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("volume {name} is declared"));
            let dir = match volume["persistentVolumeClaim"]["claimName"].as_str() {
                Some(claim) => self.root.join("pvc").join(claim),
                None => self.root.join(pod).join(name),
            };
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(map) = volume["configMap"]["name"].as_str() {
                for (key, value) in self.config_map(resources, map) {
                    std::fs::write(dir.join(key), value).unwrap();
                }
            }
            mounts.push((path, dir));
        }
        // Longest first, so /a/b is mapped before /a.
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        mounts
    }

    fn config_map(&self, resources: &[Value], name: &str) -> BTreeMap<String, String> {
        if let Some(made) = self.made.get(name) {
            return made.clone();
        }
        resources
            .iter()
            .find(|r| r["kind"] == "ConfigMap" && r["metadata"]["name"].as_str() == Some(name))
            .and_then(|r| r["data"].as_object())
            .map(|data| {
                data.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An argument as it works here: mount paths → directories, Services → loopback addresses,
    /// listening on every address → loopback on any free port.
    fn localise(&self, arg: &str, mounts: &[(String, PathBuf)]) -> String {
        let mut arg = arg.to_string();
        for (path, dir) in mounts {
            if let Some(i) = arg.find(path.as_str()) {
                arg = format!("{}{}{}", &arg[..i], dir.display(), &arg[i + path.len()..]);
                break;
            }
        }
        for (service, local) in &self.services {
            arg = arg.replace(&format!("//{service}/"), &format!("//{local}/"));
        }
        if let Some(i) = arg.find("0.0.0.0:") {
            arg = format!("{}127.0.0.1:0", &arg[..i]);
        }
        arg
    }
}

/// `$(NAME)` replaced by `env`'s value when it has one (left as written otherwise, as the
/// kubelet does), `$$` as `$`.
pub fn expand_vars(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &tail[end + 3..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}
