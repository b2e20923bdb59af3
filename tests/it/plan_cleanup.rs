//! Safe against a real hub (issue #17): `fleetsim plan` with known answers, `fleetsim run`
//! refusing a remote plan that exceeds the daily quota, and plan → run → cleanup against
//! `fleetsim emulate` as a remote target leaving the registry as it was.

use std::process::Command;
use std::time::Duration;

use crate::common;

const LIMIT: Duration = Duration::from_secs(60);

pub(crate) fn fleetsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
}

pub(crate) fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn an_s1_unit_with_500_devices_at_one_message_a_second_exceeds_the_quota_and_run_refuses() {
    let dir = common::scratch_dir("plan-quota");
    let scenario = dir.join("quota.yaml");
    std::fs::write(
        &scenario,
        "name: quota\nduration: 1h\ntarget:\n  remote:\n    ezca: {url: 'https://127.0.0.1:9/'}\n    iothub: {sku: S1, units: 1}\nfleet:\n  devices: 500\n  arrival_rate: 50/s\n  registration: bulk\ntelemetry:\n  interval: 1s\n",
    )
    .unwrap();
    let plan = common::output_within(fleetsim().arg("plan").arg(&scenario), LIMIT);
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{out}");
    assert!(out.contains("EXCEEDS"), "{out}");
    assert!(out.contains("13.3 min"), "{out}");
    assert!(out.contains("400,000"), "{out}");

    // `run` refuses before it touches the network (nothing listens on port 9 anyway).
    let run = common::output_within(
        fleetsim()
            .args(["run", "--quiet", "--report"])
            .arg(dir.join("r.json"))
            .arg(&scenario),
        LIMIT,
    );
    let out = text(&run);
    assert_eq!(run.status.code(), Some(1), "{out}");
    assert!(out.contains("the plan exceeds the hub's limits"), "{out}");
    assert!(out.contains("--accept-plan"), "{out}");

    let json = common::output_within(fleetsim().args(["plan", "--json"]).arg(&scenario), LIMIT);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(plan["tier"], "S1 x 1");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unknown_sku_is_a_clear_error() {
    let dir = common::scratch_dir("plan-sku");
    let scenario = dir.join("s4.yaml");
    std::fs::write(
        &scenario,
        "name: s4\nduration: 1m\ntarget:\n  remote:\n    ezca: {url: 'https://127.0.0.1:9/'}\n    iothub: {sku: S4}\nfleet:\n  devices: 5\n  arrival_rate: 5/s\n",
    )
    .unwrap();
    let plan = common::output_within(fleetsim().arg("plan").arg(&scenario), LIMIT);
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{out}");
    assert!(out.contains("s4.yaml:6:"), "{out}");
    assert!(out.contains("S4"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The registry of `fleetsim emulate` in `dir`, as the test's own client.
pub(crate) fn registry_of(
    dir: &std::path::Path,
) -> (fleetsim::iothub::registry::RegistryClient, String) {
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let url = target
        .lines()
        .find_map(|l| l.trim().strip_prefix("registry_url: "))
        .unwrap()
        .to_string();
    let roots =
        fleetsim::crypto::certs_from_pem(&std::fs::read_to_string(dir.join("trust.pem")).unwrap())
            .unwrap();
    let conn = std::fs::read_to_string(dir.join("hub-connection-string")).unwrap();
    let client = fleetsim::iothub::registry::RegistryClient::new(
        &url,
        fleetsim::iothub::ConnectionString::parse(&conn).unwrap(),
        &roots,
        true,
    )
    .unwrap();
    (client, url)
}

pub(crate) fn with_secrets(command: &mut Command, dir: &std::path::Path) -> Command {
    let mut c = std::mem::replace(command, fleetsim());
    c.env(
        "EZCA_TOKEN",
        std::fs::read_to_string(dir.join("ezca-token")).unwrap(),
    )
    .env(
        "IOTHUB_CONNECTION_STRING",
        std::fs::read_to_string(dir.join("hub-connection-string")).unwrap(),
    )
    .env_remove("AZURE_MANAGEMENT_TOKEN");
    c
}

#[test]
fn plan_run_cleanup_against_fleetsim_emulate_leaves_the_registry_as_it_was() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = common::scratch_dir("plan-run-cleanup");
    let mut emulate = common::Watched::spawn(
        common::emulate_on_free_ports(&dir).args(["--sku", "S1", "--units", "1", "--no-dps"]),
        "fleetsim emulate",
    );
    let banner = emulate.read_until("ready", Duration::from_secs(30));
    assert!(banner.contains("device CA root:"), "{banner}");
    assert!(dir.join("ezca-root.pem").exists());
    let (registry, _) = registry_of(&dir);
    // Identities that are not the run's: one named like the run's but without its tag.
    let run_id = "fstest0017";
    let bystanders = ["bystander-1", "bystander-2", "fstest0017-sim-intruder"];
    // One bulk call: S1's registry allows 100 operations a minute.
    let ids: Vec<String> = bystanders.iter().map(|s| s.to_string()).collect();
    let created = rt.block_on(registry.bulk_create(&ids)).unwrap();
    assert!(created.is_successful, "{created:?}");
    let service = crate::cleanup_revoke::service_of(&dir);
    let before = rt.block_on(crate::cleanup_revoke::identities(&service));
    assert_eq!(before.len(), 3, "{before:?}");

    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    assert!(target.contains("sku: S1"), "{target}");
    let scenario = dir.join("remote.yaml");
    std::fs::write(
        &scenario,
        format!("name: tagged\nduration: 3s\n{target}fleet:\n  devices: 250\n  arrival_rate: 100/s\n  registration: bulk\ntelemetry:\n  interval: 10s\n"),
    )
    .unwrap();
    let plan = common::output_within(
        &mut with_secrets(fleetsim().args(["plan", "--check"]).arg(&scenario), &dir),
        LIMIT,
    );
    let out = text(&plan);
    assert!(plan.status.success(), "{out}");
    assert!(out.contains("S1 x 1 (from the hub"), "{out}");
    assert!(out.contains("SSL CA(s) available"), "{out}");

    let report = dir.join("report.json");
    let run = common::output_within(
        &mut with_secrets(
            fleetsim()
                .args(["run", "--quiet", "--run-id", run_id, "--report"])
                .arg(&report)
                .arg(&scenario),
            &dir,
        ),
        Duration::from_secs(120),
    );
    assert!(run.status.success(), "{}", text(&run));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["run_id"], run_id);
    assert_eq!(json["devices"]["connected"], 250);

    let cleanup = |extra: &[&str]| {
        let mut c = fleetsim();
        c.arg("cleanup")
            .arg("--scenario")
            .arg(&scenario)
            .args(extra);
        with_secrets(&mut c, &dir)
    };
    let dry = common::output_within(&mut cleanup(&["--run", run_id, "--dry-run"]), LIMIT);
    let out = text(&dry);
    assert!(out.contains("would remove 250 identities"), "{out}");
    assert!(
        !out.contains("intruder") && !out.contains("bystander"),
        "{out}"
    );

    // Interrupted (Ctrl-C) after its first bulk call: it stops, exits 130 and names what is left.
    let mut first = common::Watched::spawn(
        cleanup(&["--run", run_id, "--pace", "3s"]).stdout(std::process::Stdio::piped()),
        "fleetsim cleanup",
    );
    first.read_until("cleanup: 100/250", Duration::from_secs(30));
    let interrupt = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let said = first.read_until(&format!("  left: {run_id}-sim-000249"), LIMIT);
    assert!(
        said.contains(&format!(
            "interrupted: 150 identities of run {run_id} left; run the same cleanup again"
        )),
        "{said}"
    );
    assert_eq!(said.matches("  left: ").count(), 150, "{said}");
    assert_eq!(first.wait_within(LIMIT).code(), Some(130));

    // Killed (SIGKILL) after its next bulk call: nothing lost, running it again removes the rest.
    let mut second = common::Watched::spawn(
        cleanup(&["--run", run_id, "--pace", "3s"]).stdout(std::process::Stdio::piped()),
        "fleetsim cleanup",
    );
    second.read_until("cleanup: 100/150", Duration::from_secs(30));
    second.kill();
    let third = common::output_within(
        &mut cleanup(&["--report", report.to_str().unwrap(), "--pace", "100ms"]),
        LIMIT,
    );
    let out = text(&third);
    assert!(third.status.success(), "{out}");
    assert!(out.contains("removed 50 identities"), "{out}");
    let after = rt.block_on(crate::cleanup_revoke::identities(&service));
    assert_eq!(after, before, "the registry is as it was before the run");

    rt.block_on(async {
        for id in bystanders {
            let found = get_paced(&registry, id).await;
            assert!(found.is_ok(), "a bystander is left alone: {found:?}");
        }
        let gone = get_paced(&registry, &format!("{run_id}-sim-000000")).await;
        assert!(
            matches!(
                gone,
                Err(fleetsim::iothub::HubError::Status { status: 404, .. })
            ),
            "the run's identities are gone: {gone:?}"
        );
    });
    let stats = common::output_within(&mut cleanup(&["--run", run_id, "--dry-run"]), LIMIT);
    assert!(
        text(&stats).contains("would remove 0 identities"),
        "{}",
        text(&stats)
    );
    emulate.kill();
    std::fs::remove_dir_all(&dir).ok();
}

/// A registry GET that waits out S1's registry throttle.
pub(crate) async fn get_paced(
    registry: &fleetsim::iothub::registry::RegistryClient,
    id: &str,
) -> Result<fleetsim::iothub::registry::Device, fleetsim::iothub::HubError> {
    for _ in 0..10 {
        match registry.get(id).await {
            Err(fleetsim::iothub::HubError::Status {
                status: 429,
                retry_after,
                ..
            }) => tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await,
            other => return other,
        }
    }
    registry.get(id).await
}

#[test]
fn hub_upload_ca_proves_possession_of_the_key_and_a_wrong_key_is_refused() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = common::scratch_dir("upload-ca");
    let mut emulate = common::Watched::spawn(
        common::emulate_on_free_ports(&dir).arg("--no-dps"),
        "fleetsim emulate",
    );
    emulate.read_until("ready", Duration::from_secs(30));
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "Own Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("other-key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let scenario = dir.join("hub.yaml");
    std::fs::write(
        &scenario,
        format!("name: hub\nduration: 1s\n{target}fleet:\n  devices: 1\n  arrival_rate: 1/s\n"),
    )
    .unwrap();
    let upload = |key: &str| {
        let mut c = fleetsim();
        c.args(["hub", "upload-ca", "--name", "own", "--scenario"])
            .arg(&scenario)
            .arg("--cert")
            .arg(dir.join("ca.pem"))
            .arg("--key")
            .arg(dir.join(key));
        common::output_within(&mut with_secrets(&mut c, &dir), LIMIT)
    };
    let forged = upload("other-key.pem");
    let out = text(&forged);
    assert!(!forged.status.success(), "{out}");
    assert!(out.contains("not signed by this CA"), "{out}");
    let ok = upload("ca-key.pem");
    let out = text(&ok);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("verified: devices whose chains end at own"),
        "{out}"
    );
    emulate.kill();
    std::fs::remove_dir_all(&dir).ok();
}

/// A management endpoint on loopback (HTTPS, with a certificate of its own, returned as PEM)
/// that answers every request with `answers` in turn (HTTP 200, JSON content type), then
/// closes: a hub resource fleetsim cannot read.
fn answering(answers: Vec<&'static str>) -> (String, String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = cert.pem();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for body in answers {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            let tls = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut reader = BufReader::new(rustls::StreamOwned::new(tls, stream));
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut stream = reader.into_inner();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).unwrap();
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    });
    (url, pem, server)
}

#[test]
fn plan_check_says_clearly_when_the_hubs_answer_is_unreadable() {
    let dir = common::scratch_dir("plan-unreadable");
    let mut emulate = common::Watched::spawn(
        common::emulate_on_free_ports(&dir).arg("--no-dps"),
        "fleetsim emulate",
    );
    emulate.read_until("ready", Duration::from_secs(30));
    let answers = vec![
        "<html>Service Unavailable</html>",
        r#"{"name":"hub","sku":{"name":"S9","capacity":1}}"#,
        r#"{"name":"hub"}"#,
    ];
    let expected = [
        "the hub's resource does not parse",
        "S9",
        "the hub's resource has no sku",
    ];
    let (url, pem, server) = answering(answers);
    // The hub's trust: the emulators' root and the answering endpoint's certificate.
    let trust = dir.join("trust-and-answering.pem");
    let emulators = std::fs::read_to_string(dir.join("trust.pem")).unwrap();
    std::fs::write(&trust, format!("{emulators}{pem}")).unwrap();
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let mut in_hub = false;
    let target: String = target
        .lines()
        .map(|l| {
            in_hub |= l.trim_start().starts_with("iothub:");
            match l.trim_start().split(':').next().unwrap_or("") {
                "management_url" => format!("      management_url: {url}/subscriptions/s/resourceGroups/g/providers/Microsoft.Devices/IotHubs/hub\n"),
                "trust_pem" if in_hub => format!("      trust_pem: {}\n", trust.display()),
                _ => format!("{l}\n"),
            }
        })
        .collect();
    let scenario = dir.join("check.yaml");
    std::fs::write(
        &scenario,
        format!("name: check\nduration: 1m\n{target}fleet:\n  devices: 5\n  arrival_rate: 5/s\n"),
    )
    .unwrap();
    for what in expected {
        let plan = common::output_within(
            &mut with_secrets(fleetsim().args(["plan", "--check"]).arg(&scenario), &dir),
            LIMIT,
        );
        let out = text(&plan);
        assert_eq!(plan.status.code(), Some(1), "{out}");
        assert!(out.contains("--check: the hub's SKU"), "{out}");
        assert!(out.contains(what), "{what}: {out}");
    }
    server.join().unwrap();
    emulate.kill();
    std::fs::remove_dir_all(&dir).ok();
}
