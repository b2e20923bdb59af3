//! `fleetsim cleanup --revoke` against `fleetsim emulate` as a remote target (the path used
//! against real EZCA): it revokes exactly the certificates the run's `--state` records (issued
//! and renewed), none of another run's, resumes after a kill half-way without revoking or
//! counting anything twice, and EZCA's CRL then lists exactly those serials.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{self, Watched};
use crate::plan_cleanup::{fleetsim, text, with_secrets};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `devices` devices as run `run_id` with `--state state`; answers the report.
fn run(dir: &Path, name: &str, run_id: &str, devices: u32, state: &Path) -> serde_json::Value {
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let scenario = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &scenario,
        format!("name: {name}\nduration: 7s\n{target}fleet:\n  devices: {devices}\n  arrival_rate: 20/s\ncertificate:\n  validity_days: 4\n  renew_at: 50%\ntelemetry:\n  interval: 2s\n"),
    )
    .unwrap();
    let report = dir.join(format!("{name}.json"));
    let out = common::output_within(
        &mut with_secrets(
            fleetsim()
                .args(["run", "--quiet", "--run-id", run_id, "--state"])
                .arg(state)
                .arg("--report")
                .arg(&report)
                .arg(&scenario),
            dir,
        ),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

/// The serials (lower-case hex, no leading zeros) the state's certificates have.
fn state_serials(state: &Path) -> BTreeSet<String> {
    let ledger = fleetsim::state::RevocationLedger::open(state).unwrap();
    ledger
        .certificates()
        .unwrap()
        .iter()
        .map(|c| trimmed(&c.serial))
        .collect()
}

fn trimmed(hex: &str) -> String {
    hex.to_ascii_lowercase().trim_start_matches('0').to_string()
}

/// The serials EZCA's CRL for the scenario's CA lists.
pub(crate) fn crl_serials(dir: &Path) -> BTreeSet<String> {
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let field = |name: &str| {
        target
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap().to_string())
            .unwrap()
    };
    let (url, ca_id) = (field("url: "), field("ca_id: "));
    let roots =
        fleetsim::crypto::certs_from_pem(&std::fs::read_to_string(dir.join("trust.pem")).unwrap())
            .unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only(
            roots
                .iter()
                .map(|r| reqwest::Certificate::from_der(r).unwrap()),
        )
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let crl = rt.block_on(async {
        let answer = http.get(format!("{url}crl/{ca_id}.crl")).send().await;
        answer.unwrap().bytes().await.unwrap()
    });
    let (_, crl) = x509_parser::parse_x509_crl(&crl).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| {
            trimmed(
                &r.raw_serial()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            )
        })
        .collect()
}

/// The number just before `suffix` in `text` (e.g. "revoked 12 certificates, " → 12).
fn number_before(text: &str, suffix: &str) -> usize {
    let end = text
        .find(suffix)
        .unwrap_or_else(|| panic!("{suffix:?} in {text}"));
    let digits: String = text[..end]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

#[test]
fn cleanup_revoke_revokes_exactly_the_runs_certificates_and_resumes_after_a_kill() {
    let dir = common::scratch_dir("cleanup-revoke");
    let mut emulate = Watched::spawn(
        common::emulate_on_free_ports(&dir).args(["--time-scale", "1s", "--no-dps"]),
        "fleetsim emulate",
    );
    emulate.read_until("ready", Duration::from_secs(30));
    // Another run at the same CA: its certificates must survive the first run's cleanup.
    let other_state = dir.join("other.state");
    run(&dir, "other", "fsother", 3, &other_state);
    let state = dir.join("run.state");
    let report = run(&dir, "mine", "fsmine", 10, &state);
    assert_eq!(report["devices"]["connected"], 10);
    let renewals = report["devices"]["renewals"].as_u64().unwrap();
    assert!(renewals >= 10, "the run renewed: {renewals}");
    let mine = state_serials(&state);
    // Every certificate the CA issued to the run: one each, plus every renewal.
    assert_eq!(mine.len() as u64, 10 + renewals, "{mine:?}");
    let theirs = state_serials(&other_state);
    assert!(theirs.len() >= 3 && mine.is_disjoint(&theirs));
    assert!(crl_serials(&dir).is_empty());

    let scenario = dir.join("mine.yaml");
    let cleanup = |extra: &[&str]| {
        let mut c = fleetsim();
        c.arg("cleanup")
            .arg("--scenario")
            .arg(&scenario)
            .arg("--state")
            .arg(&state)
            .arg("--revoke")
            .args(extra);
        with_secrets(&mut c, &dir)
    };
    // Without the state there is no record of the run's certificates: refused, saying why.
    let mut by_id = fleetsim();
    by_id
        .args(["cleanup", "--run", "fsmine", "--revoke", "--scenario"])
        .arg(&scenario);
    let refused = common::output_within(&mut with_secrets(&mut by_id, &dir), LIMIT);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("--revoke needs the run's --state FILE"),
        "{}",
        text(&refused)
    );

    let dry = common::output_within(&mut cleanup(&["--dry-run"]), LIMIT);
    let out = text(&dry);
    assert!(dry.status.success(), "{out}");
    let total = mine.len();
    assert!(
        out.contains(&format!(
            "would revoke {total} certificates, 0 revoked before"
        )),
        "{out}"
    );
    assert!(out.contains("would remove 10 identities"), "{out}");
    assert!(crl_serials(&dir).is_empty(), "a dry run revokes nothing");

    // Interrupted (Ctrl-C) after 3 revocations: it stops before deleting anything, exits 130
    // and says how many certificates are left.
    let mut first = Watched::spawn(
        cleanup(&["--revoke-pace", "400ms"]).stdout(Stdio::piped()),
        "fleetsim cleanup --revoke",
    );
    first.read_until("revoke: 3/", LIMIT);
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let said = first.read_until("interrupted: ", LIMIT);
    assert_eq!(first.wait_within(LIMIT).code(), Some(130), "{said}");
    let left = number_before(
        &said,
        " certificates left to revoke; run the same cleanup again",
    );
    // Recorded as revoked: what EZCA lists, less at most the one a signal cut off in flight
    // (revoked at EZCA, not yet recorded: the next pass revokes it again, harmlessly).
    let recorded = total - left;
    let listed = crl_serials(&dir).len();
    assert!(
        recorded >= 3 && (recorded..=recorded + 1).contains(&listed),
        "{said}"
    );
    assert!(!said.contains("removed"), "{said}");

    // Killed (SIGKILL) a few revocations further: what it revoked is recorded and not redone.
    let mut second = Watched::spawn(
        cleanup(&["--revoke-pace", "400ms"]).stdout(Stdio::piped()),
        "fleetsim cleanup --revoke",
    );
    second.read_until("revoke: 3/", LIMIT);
    second.kill();
    let half = crl_serials(&dir);
    assert!(half.len() >= 6 && half.len() < total, "{half:?}");
    assert!(half.is_subset(&mine), "{half:?}");

    let rest = common::output_within(&mut cleanup(&["--revoke-pace", "10ms"]), LIMIT);
    let out = text(&rest);
    assert!(rest.status.success(), "{out}");
    let revoked = number_before(&out, " certificates, ");
    let before = number_before(
        &out,
        " revoked before, 0 refused by EZCA, 0 without a thumbprint",
    );
    assert_eq!(revoked + before, total, "{out}");
    assert!((half.len() - 1..=half.len()).contains(&before), "{out}");
    assert!(out.contains("removed 10 identities"), "{out}");
    assert_eq!(
        crl_serials(&dir),
        mine,
        "EZCA lists exactly the run's certificates"
    );

    // Nothing is left: a third pass revokes nothing.
    let third = common::output_within(&mut cleanup(&[]), LIMIT);
    let out = text(&third);
    assert!(
        out.contains(&format!("revoked 0 certificates, {total} revoked before")),
        "{out}"
    );
    emulate.kill();
    std::fs::remove_dir_all(&dir).ok();
}

/// Every identity the hub of `fleetsim emulate` in `dir` holds: (id, its `fleetsim.run` tag),
/// sorted; a throttled query (an S1 hub's) is retried.
pub(crate) async fn identities(
    service: &fleetsim::iothub::service::ServiceClient,
) -> Vec<(String, Option<String>)> {
    use fleetsim::iothub::service::CallError;
    let mut tries = 0;
    let items = loop {
        match service.query_all("SELECT * FROM devices", Some(1000)).await {
            Err(CallError::Throttled { retry_after, .. }) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
            }
            other => break other.unwrap().items,
        }
    };
    let mut ids: Vec<(String, Option<String>)> = items
        .iter()
        .map(|item| {
            let tag = item
                .get("tags")
                .and_then(|t| t.as_object())
                .and_then(fleetsim::iothub::identity::run_of)
                .map(str::to_string);
            (item["deviceId"].as_str().unwrap().to_string(), tag)
        })
        .collect();
    ids.sort();
    ids
}

pub(crate) fn service_of(dir: &Path) -> fleetsim::iothub::service::ServiceClient {
    let (_, url) = crate::plan_cleanup::registry_of(dir);
    let roots =
        fleetsim::crypto::certs_from_pem(&std::fs::read_to_string(dir.join("trust.pem")).unwrap())
            .unwrap();
    let conn = std::fs::read_to_string(dir.join("hub-connection-string")).unwrap();
    fleetsim::iothub::service::ServiceClient::new(
        &url,
        fleetsim::iothub::registry::RegistryAuth::Sas(
            fleetsim::iothub::ConnectionString::parse(&conn).unwrap(),
        ),
        &roots,
        true,
    )
    .unwrap()
}

/// A run killed (SIGKILL) while hundreds of per-device registrations are in flight leaves no
/// identity without its run's tag: each is created with the tag in one call, so cleanup finds
/// and removes every identity the run created.
#[test]
fn a_run_killed_while_registering_leaves_no_untagged_identity() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = common::scratch_dir("register-crash");
    let mut emulate = Watched::spawn(
        common::emulate_on_free_ports(&dir).arg("--no-dps"),
        "fleetsim emulate",
    );
    emulate.read_until("ready", Duration::from_secs(30));
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let scenario = dir.join("crash.yaml");
    std::fs::write(
        &scenario,
        format!("name: crash\nduration: 30s\n{target}fleet:\n  devices: 600\n  arrival_rate: 600/s\n  registration: per-device\ntelemetry:\n  interval: 10s\n"),
    )
    .unwrap();
    let mut run = Watched::spawn(
        with_secrets(
            fleetsim()
                .args(["run", "--quiet", "--run-id", "fscrash"])
                .arg(&scenario)
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
            &dir,
        )
        .stdout(Stdio::null()),
        "fleetsim run",
    );
    let service = service_of(&dir);
    let deadline = std::time::Instant::now() + LIMIT;
    rt.block_on(async {
        while identities(&service).await.len() < 100 {
            assert!(!run.has_exited(), "the run stopped before registering 100");
            assert!(std::time::Instant::now() < deadline, "the run registers");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    run.kill();
    // Let the hub finish the requests the killed run had in flight.
    std::thread::sleep(Duration::from_millis(500));
    let left = rt.block_on(identities(&service));
    let created = left.len();
    // Usually a few hundred: killed half-way (all 600 on a very slow machine is no failure).
    assert!((100..=600).contains(&created), "{created} identities");
    let untagged: Vec<&(String, Option<String>)> = left
        .iter()
        .filter(|(_, tag)| tag.as_deref() != Some("fscrash"))
        .collect();
    assert!(untagged.is_empty(), "untagged identities: {untagged:?}");
    assert!(left.iter().all(|(id, _)| id.starts_with("fscrash-")));

    let mut cleanup = fleetsim();
    cleanup
        .args([
            "cleanup",
            "--run",
            "fscrash",
            "--pace",
            "10ms",
            "--scenario",
        ])
        .arg(&scenario);
    let out = common::output_within(&mut with_secrets(&mut cleanup, &dir), LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("removed {created} identities")),
        "{}",
        text(&out)
    );
    assert!(rt.block_on(identities(&service)).is_empty());
    emulate.kill();
    std::fs::remove_dir_all(&dir).ok();
}

/// Cleanup's query waits out the hub's query throttle (S1 allows 20 a minute per unit) instead
/// of failing: here 120 a minute (a minute's burst, then one every 0.5 s) and no shaping,
/// queried 125 times at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_waits_out_a_throttled_query() {
    use fleetsim::emulator::HubConfig;
    use fleetsim::emulator::hub::throttle::HubLimits;
    let mut limits = HubLimits::unlimited();
    limits.queries_per_min = Some(120.0);
    limits.shaping = Duration::ZERO;
    let config = HubConfig {
        limits,
        ..HubConfig::default()
    };
    let e = common::start_emulators_with(fleetsim::clock::Clock::real(), config).await;
    let registry = common::registry(&e).with_run_tag(Some("fsquery".into()));
    for id in ["fsquery-1", "fsquery-2"] {
        assert!(registry.create_tagged(id).await.unwrap());
    }
    assert!(!registry.create_tagged("fsquery-1").await.unwrap());
    let service = fleetsim::iothub::service::ServiceClient::new(
        &e.hub_registry_url,
        fleetsim::iothub::registry::RegistryAuth::Sas(e.hub.connection_string()),
        std::slice::from_ref(&e.tls_root),
        true,
    )
    .unwrap();
    for _ in 0..125 {
        let ids = fleetsim::cleanup::tagged_identities(&service, "fsquery")
            .await
            .unwrap();
        assert_eq!(ids, ["fsquery-1", "fsquery-2"]);
    }
    assert!(e.hub.stats().throttled_queries > 0, "the hub did throttle");
    e.shutdown().await;
}
