//! `fleetsim run --state`: a soak killed with SIGKILL mid-way resumes from its state, with no
//! device enrolled twice, every certificate the CA issued known to the state, and counters that
//! carry on into a report covering the whole soak.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::common::{self, Watched};

const SCENARIO: &str = "name: resume-soak
duration: 24s
time_scale: 8s
target:
  embedded: {}
fleet:
  devices: 16
  arrival_rate: 2/s
certificate:
  validity_days: 1
  renew_at: 50%
telemetry:
  interval: 500ms
report:
  interval: 1s
";

/// `fleetsim run --state` on `scenario`; its report goes to `report`.
fn run_command(scenario: &Path, state: &Path, report: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    command
        .args(["run", "--quiet", "--report"])
        .arg(report)
        .arg("--state")
        .arg(state)
        .arg(scenario);
    command
}

/// Starts part one of a soak, to be killed mid-way.
fn start(scenario: &Path, state: &Path, report: &Path) -> Watched {
    Watched::spawn(
        run_command(scenario, state, report)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
        "fleetsim run --state",
    )
}

/// Resumes the soak and runs it to its end (well under a minute; killed past 3).
fn resume(scenario: &Path, state: &Path, report: &Path) -> std::process::Output {
    common::output_within(
        &mut run_command(scenario, state, report),
        Duration::from_secs(180),
    )
}

/// One number from the state; any SQL error (a renamed table or column, a locked or missing
/// file) fails the test rather than reading as 0.
fn query(db: &Path, sql: &str) -> i64 {
    try_query(db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn try_query(db: &Path, sql: &str) -> rusqlite::Result<i64> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.query_row(sql, [], |r| r.get(0))
}

/// Polls the state of a running soak until `ready` holds for it, within `limit`. Errors while the
/// run is still creating the file count as "not yet"; the last one is shown if time runs out.
fn wait_for_state(
    child: &mut Watched,
    state: &Path,
    limit: Duration,
    ready: impl Fn(&Path) -> rusqlite::Result<bool>,
) {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no state file yet");
    loop {
        if state.exists() {
            match ready(state) {
                Ok(true) => return,
                Ok(false) => last = "not there yet".into(),
                Err(e) => last = e.to_string(),
            }
        }
        assert!(
            Instant::now() < deadline,
            "state not ready within {limit:?}: {last}"
        );
        assert!(!child.has_exited(), "fleetsim ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// At most one first issuance per device in the state's history, and as many certificates in
/// the CA's own journal as the state says the device was issued (one per issue or renewal).
fn assert_enrolled_once(state: &Path) {
    let twice = query(
        state,
        "SELECT count(*) FROM (SELECT device_id FROM certificates WHERE kind = 'issue' \
         GROUP BY device_id HAVING count(*) > 1)",
    );
    assert_eq!(twice, 0, "devices enrolled twice");
    let ca_vs_state = query(
        state,
        "SELECT count(*) FROM devices d WHERE (SELECT count(*) FROM ca_issued c WHERE \
         c.subject_cn = d.id) != 1 + d.renewals AND d.enrolled = 1",
    );
    assert_eq!(ca_vs_state, 0, "CA issuances per device != 1 + renewals");
}

#[test]
fn a_killed_soak_resumes_without_enrolling_twice() {
    let dir = common::scratch_dir("resume");
    let scenario = dir.join("soak.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let state = dir.join("soak.db");
    let report = dir.join("report.json");

    // Part one: killed once some devices enrolled and some renewed.
    let mut child = start(&scenario, &state, &report);
    wait_for_state(&mut child, &state, Duration::from_secs(40), |db| {
        Ok(
            try_query(db, "SELECT count(*) FROM certificates WHERE kind = 'renew'")? >= 2
                && try_query(db, "SELECT count(*) FROM checkpoint")? == 1,
        )
    });
    child.kill(); // SIGKILL
    let enrolled_at_kill = query(&state, "SELECT count(*) FROM devices WHERE enrolled = 1");
    let checkpoint: String = Connection::open(&state)
        .unwrap()
        .query_row("SELECT report_json FROM checkpoint", [], |r| r.get(0))
        .unwrap();
    let at_kill: serde_json::Value = serde_json::from_str(&checkpoint).unwrap();
    let sent_at_kill = at_kill["messages"]["sent"].as_u64().unwrap();
    assert!(enrolled_at_kill > 0 && sent_at_kill > 0);
    assert!(!report.exists(), "a killed run writes no report");

    // Part two: resumed to the end.
    let output = resume(&scenario, &state, &report);
    assert!(
        output.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // No device was enrolled twice: one first issuance at most per device, by the state's
    // history and by the CA's own journal (one certificate per issue or renewal).
    assert_enrolled_once(&state);
    // Every certificate the CA issued is known to the state.
    let unknown = query(
        &state,
        "SELECT count(*) FROM ca_issued WHERE serial NOT IN (SELECT serial FROM certificates)",
    );
    assert_eq!(unknown, 0);
    // The hub's registry survived the restart: every device is there once.
    assert_eq!(query(&state, "SELECT count(*) FROM hub_devices"), 16);
    let renewals = query(&state, "SELECT sum(renewals) FROM devices");

    // The report covers both parts: counters continued from the kill.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    // Part two's hub counted only what part two sent (the hub's counters are not kept in the
    // state), so counters that restarted from zero would fall short of the kill's plus those.
    let sent = json["messages"]["sent"].as_u64().unwrap();
    let hub_received_after = json["hub"]["messages"].as_u64().expect("hub counters");
    assert!(hub_received_after > 0, "{}", json["hub"]);
    assert!(
        sent >= sent_at_kill + hub_received_after,
        "sent {sent} < {sent_at_kill} at the kill + {hub_received_after} received after it: \
         the counters did not carry on"
    );
    assert_eq!(json["devices"]["failed"], 0, "{json}");
    assert_eq!(json["devices"]["enrolled"], 16);
    assert_eq!(json["devices"]["renewals"].as_i64().unwrap(), renewals);
    let issue_count = |v: &serde_json::Value| {
        v["phases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["phase"] == "ca.issue" && p["outcome"] == "ok")
            .map(|p| p["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(issue_count(&json) >= issue_count(&at_kill));

    // The timeline covers both parts too: it starts in the first and its intervals add up to
    // the whole soak's counts.
    let points = json["timeline"]["points"].as_array().expect("timeline");
    let t: Vec<f64> = points.iter().map(|p| p["t"].as_f64().unwrap()).collect();
    assert!(t[0] <= 1.5, "first point at {} s", t[0]);
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    assert!(*t.last().unwrap() >= 23.0, "{t:?}");
    let timeline_issues: u64 = points
        .iter()
        .filter_map(|p| p["phases"]["ca.issue"]["ok"].as_u64())
        .sum();
    assert_eq!(timeline_issues, issue_count(&json));
    assert_eq!(points.last().unwrap()["messages_sent"].as_u64(), Some(sent));
    std::fs::remove_dir_all(&dir).ok();
}

/// A soak resumed after its certificates expired (it was down longer than their lifetime): each
/// device counts as expired before renewal, gets a new certificate for its registered domain
/// before connecting (no second enrolment), and the soak carries on with no device failed.
#[test]
fn a_soak_resumed_after_its_certificates_expired_reissues_them() {
    let dir = common::scratch_dir("expired");
    let scenario = dir.join("soak.yaml");
    // A 1-day certificate lives 4 s; every device enrols within the first second.
    std::fs::write(
        &scenario,
        "name: expired-soak
duration: 14s
time_scale: 4s
target:
  embedded: {}
fleet:
  devices: 4
  arrival_rate: 8/s
certificate:
  validity_days: 1
  renew_at: 80%
telemetry:
  interval: 500ms
",
    )
    .unwrap();
    let state = dir.join("soak.db");
    let report = dir.join("report.json");

    let mut child = start(&scenario, &state, &report);
    wait_for_state(&mut child, &state, Duration::from_secs(30), |db| {
        Ok(
            try_query(db, "SELECT count(*) FROM devices WHERE enrolled = 1")? == 4
                && try_query(db, "SELECT count(*) FROM checkpoint")? == 1,
        )
    });
    child.kill(); // SIGKILL
    // Down for longer than a certificate lives.
    std::thread::sleep(Duration::from_secs(5));

    let output = resume(&scenario, &state, &report);
    assert!(
        output.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    assert_eq!(json["devices"]["failed"], 0, "{json}");
    assert_eq!(json["devices"]["connected"], 4, "{json}");
    assert_eq!(
        json["certificates"]["health"]["expired_before_renewal"], 4,
        "{}",
        json["certificates"]
    );
    // Re-issued, not enrolled again; the CA's journal and the state agree.
    assert_enrolled_once(&state);
    assert!(query(&state, "SELECT min(renewals) FROM devices") >= 1);
    std::fs::remove_dir_all(&dir).ok();
}
