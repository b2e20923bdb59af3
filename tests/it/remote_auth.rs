//! Every `auth:` of a remote EZCA written in a scenario, in a run against `fleetsim emulate`: the
//! token each source yields is the one EZCA accepts (the emulator's own, handed out by a token
//! endpoint, a file, a variable or a stand-in `az`), so the devices enrol only if the run asked
//! the source the scenario names, the way it documents. A missing variable is named.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};

use crate::common;

/// A run's name, its `auth:` and the variables it adds.
type Variant = (&'static str, String, Vec<(&'static str, String)>);

/// What the token endpoint was asked: (path, fields or query, plus the Metadata header).
type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

/// An Azure AD stand-in on loopback answering client-credentials (`/tenant-1/...`) and managed
/// identity (`/msi`) requests with `token`; returns its base URL.
fn token_endpoint(rt: &tokio::runtime::Runtime, token: String) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let aad_token = token.clone();
    let app = axum::Router::new()
        .route(
            "/tenant-1/oauth2/v2.0/token",
            post(move |State(seen): State<Seen>, Form(fields): Form<HashMap<String, String>>| async move {
                seen.lock().unwrap().push(("aad".into(), fields));
                axum::Json(serde_json::json!({"token_type": "Bearer", "expires_in": 3600, "access_token": aad_token}))
            }),
        )
        .route(
            "/msi",
            get(move |State(seen): State<Seen>, headers: HeaderMap, Query(mut q): Query<HashMap<String, String>>| async move {
                let metadata = headers.get("Metadata").and_then(|v| v.to_str().ok()).unwrap_or("");
                q.insert("metadata".into(), metadata.into());
                seen.lock().unwrap().push(("msi".into(), q));
                let expires_on = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
                axum::Json(serde_json::json!({"access_token": token, "expires_on": expires_on.to_string(), "resource": "x"}))
            }),
        )
        .with_state(seen.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// A stand-in `az` in `dir` that prints `token` as `az account get-access-token` does, for the
/// EZCA scope only.
fn fake_az(dir: &Path, token: &str) {
    let az = dir.join("az");
    std::fs::write(
        &az,
        format!("#!/bin/sh\n[ \"$4\" = \"https://management.core.windows.net/.default\" ] || exit 3\necho '{{\"accessToken\":\"{token}\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":4070908800,\"tokenType\":\"Bearer\"}}'\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `fleetsim run` of two devices against the emulators, its EZCA authorised by `auth` (a flow
/// mapping) and no `EZCA_TOKEN`; `env` adds variables.
fn run_with(dir: &Path, name: &str, auth: &str, env: &[(&str, String)]) -> Command {
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let target = target.replacen(
        "    ezca:\n",
        &format!("    ezca:\n      auth: {auth}\n"),
        1,
    );
    let scenario = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &scenario,
        format!("name: {name}\nduration: 5m\n{target}fleet:\n  devices: 2\n  arrival_rate: 10/s\ntelemetry:\n  interval: 1s\n"),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    command
        .args(["run", "--quiet", "--report"])
        .arg(dir.join(format!("{name}.json")))
        .arg(&scenario)
        .env_remove("EZCA_TOKEN")
        .env(
            "IOTHUB_CONNECTION_STRING",
            std::fs::read_to_string(dir.join("hub-connection-string")).unwrap(),
        );
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

#[test]
fn every_ezca_auth_source_in_a_scenario_enrols_the_fleet() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = common::scratch_dir("remote-auth");
    let mut emulate = common::Watched::spawn(
        common::emulate_on_free_ports(&dir).arg("--no-dps"),
        "fleetsim emulate",
    );
    emulate.read_until("ready", Duration::from_secs(30));
    let token = std::fs::read_to_string(dir.join("ezca-token")).unwrap();
    let (aad, seen) = token_endpoint(&rt, token.trim().to_string());
    std::fs::write(dir.join("token-file"), &token).unwrap();
    std::fs::write(dir.join("federated"), "federated-jwt\n").unwrap();
    fake_az(&dir, token.trim());
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let variants: Vec<Variant> = vec![
        (
            "env",
            "{env: PARTNER_EZCA_TOKEN}".into(),
            vec![("PARTNER_EZCA_TOKEN", token.clone())],
        ),
        (
            "file",
            format!("{{file: '{}'}}", dir.join("token-file").display()),
            vec![],
        ),
        (
            "client-secret",
            format!(
                "{{client-secret: {{tenant: tenant-1, client_id: app-1, secret_env: APP_SECRET, authority_host: '{aad}'}}}}"
            ),
            vec![("APP_SECRET", "s3cret".into())],
        ),
        (
            "managed-identity",
            format!("{{managed-identity: {{client_id: uami-1, endpoint: '{aad}/msi'}}}}"),
            vec![],
        ),
        (
            "workload-identity",
            "{workload-identity: {}}".into(),
            vec![
                ("AZURE_TENANT_ID", "tenant-1".into()),
                ("AZURE_CLIENT_ID", "wi-app".into()),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    dir.join("federated").display().to_string(),
                ),
                ("AZURE_AUTHORITY_HOST", aad.clone()),
            ],
        ),
        ("azure-cli", "{azure-cli: {}}".into(), vec![("PATH", path)]),
    ];
    // All at once, each stopped once its two devices are online.
    let runs: Vec<_> = variants
        .into_iter()
        .map(|(name, auth, env)| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut run = common::LiveRun::spawn(
                    &mut run_with(&dir, name, &auth, &env),
                    Duration::from_secs(30),
                );
                run.wait_for(Duration::from_secs(90), |value| {
                    value(r#"fleetsim_devices{state="online"}"#) == 2.0
                });
                let status = run.interrupt(Duration::from_secs(60));
                let output = run.output().to_string();
                assert_eq!(status.code(), Some(130), "{name}: {output}");
                let report: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(dir.join(format!("{name}.json"))).unwrap(),
                )
                .unwrap();
                assert_eq!(report["devices"]["enrolled"], 2, "{name}: {output}");
                name
            })
        })
        .collect();
    for run in runs {
        run.join().expect("the run enrolled its devices");
    }

    // Each network source was asked as documented, once per run (the token is cached).
    let seen = seen.lock().unwrap().clone();
    let asked = |kind: &str, key: &str, value: &str| {
        seen.iter()
            .filter(|(k, f)| k == kind && f.get(key).map(String::as_str) == Some(value))
            .count()
    };
    assert_eq!(asked("aad", "client_secret", "s3cret"), 1, "{seen:?}");
    assert_eq!(
        asked("aad", "client_assertion", "federated-jwt"),
        1,
        "{seen:?}"
    );
    assert_eq!(asked("msi", "client_id", "uami-1"), 1, "{seen:?}");
    assert_eq!(
        asked("msi", "resource", "https://management.core.windows.net"),
        1
    );
    assert_eq!(asked("msi", "metadata", "true"), 1);
    assert_eq!(seen.len(), 3, "{seen:?}");

    // A source that is not there is named.
    let out = common::output_within(
        &mut run_with(&dir, "missing", "{env: NOT_SET_ANYWHERE}", &[]),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("NOT_SET_ANYWHERE"), "{text}");

    let stopped = Command::new("kill")
        .args(["-INT", &emulate.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    emulate.wait_within(Duration::from_secs(30));
    std::fs::remove_dir_all(&dir).ok();
}
