//! A panic in any task of a run (a device, an arrival process, an emulator's handler) is caught
//! at the task's boundary, counted where it happened, shown in the report and fails the run. The
//! panics are injected through the documented test hook `FLEETSIM_TEST_PANIC` (src/inject.rs),
//! so the real catch paths are exercised.

use std::process::Command;

const SMALL: &str = "name: panics\nduration: 3s\ntarget:\n  embedded: {}\nfleet:\n  devices: 3\n  \
    arrival_rate: 20/s\ntelemetry:\n  interval: 200ms\n";

/// Runs a small embedded scenario with `point` panicking; returns (exit code, report, stdout).
fn run_with_panic(point: &str) -> (Option<i32>, serde_json::Value, String) {
    run_scenario_with_panic(point, SMALL)
}

/// Runs `text` with `point` panicking; returns (exit code, report, stdout).
fn run_scenario_with_panic(point: &str, text: &str) -> (Option<i32>, serde_json::Value, String) {
    let dir = std::env::temp_dir().join(format!("fleetsim-panic-{point}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("s.yaml");
    std::fs::write(&scenario, text).unwrap();
    let report = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "--quiet", "--report"])
        .arg(&report)
        .arg(&scenario)
        .env("FLEETSIM_TEST_PANIC", point)
        .output()
        .expect("fleetsim runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (out.status.code(), json, stdout)
}

#[test]
fn a_device_panic_is_counted_in_its_phase_and_fails_the_run() {
    let (code, json, stdout) = run_with_panic("device");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(json["panics"]["device/ca.issue"], 3, "{json}");
    assert_eq!(json["errors"]["ca.issue/panic"], 3, "{json}");
    assert_eq!(json["devices"]["failed"], 3, "{json}");
    assert!(stdout.contains("PANICS (3, the run fails)"), "{stdout}");
}

#[test]
fn an_arrival_process_panic_is_counted_and_fails_the_run() {
    let (code, json, stdout) = run_with_panic("arrivals");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(json["panics"]["arrivals"], 1, "{json}");
    assert_eq!(json["errors"]["arrival.late/panic"], 1, "{json}");
    // The device let in before the panic ran; the others never arrived.
    assert_eq!(json["devices"]["started"], 1, "{json}");
}

#[test]
fn an_emulator_handler_panic_is_answered_counted_and_fails_the_run() {
    let (code, json, stdout) = run_with_panic("emulator.ca");
    assert_eq!(code, Some(1), "{stdout}");
    let caught = json["panics"]["emulator.ca"].as_u64().unwrap_or(0);
    assert!(caught >= 3, "one per request at least: {json}");
    // The CA carried on answering: each request got a 500 (which the EZCA client retries), not
    // a reset connection.
    assert!(
        json["retries"]["ezca/RequestSSLCertificate/http_500"]
            .as_u64()
            .is_some_and(|n| n >= 3),
        "{json}"
    );
    assert_eq!(json["devices"]["enrolled"], 0, "{json}");
}

#[test]
fn a_dps_connection_panic_is_counted_and_fails_the_run() {
    let dps = "name: panics\nduration: 3s\ntarget:\n  embedded:\n    dps: {}\nfleet:\n  devices: 2\n  \
        arrival_rate: 20/s\n  provisioning: dps\ncertificate:\n  key: p256\n";
    let (code, json, stdout) = run_scenario_with_panic("emulator.dps", dps);
    assert_eq!(code, Some(1), "{stdout}");
    let caught = json["panics"]["emulator.dps"].as_u64().unwrap_or(0);
    assert!(caught >= 2, "one per device connection at least: {json}");
    assert_eq!(json["devices"]["connected"], 0, "{json}");
}

#[test]
fn an_amqp_connection_panic_is_counted_and_fails_the_run() {
    let c2d = format!(
        "{SMALL}behaviour:\n  subscriptions: [c2d]\nevents:\n  - at: 1s\n    \
         c2d: {{body: hello, devices: 100%}}\n"
    );
    let (code, json, stdout) = run_scenario_with_panic("emulator.amqp", &c2d);
    assert_eq!(code, Some(1), "{stdout}");
    let caught = json["panics"]["emulator.amqp"].as_u64().unwrap_or(0);
    assert!(caught >= 1, "the operator's C2D connection: {json}");
    // The hub's MQTT side carried on: the devices sent telemetry.
    assert!(
        json["messages"]["acked"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
}

#[test]
fn an_arrival_process_panic_is_counted_when_it_happens() {
    let dir = std::env::temp_dir().join(format!("fleetsim-panic-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("s.yaml");
    std::fs::write(&scenario, SMALL.replace("duration: 3s", "duration: 7s")).unwrap();
    // No terminal: plain progress lines on stderr, one at 5 s, long before the run winds down.
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "--report"])
        .arg(dir.join("report.json"))
        .arg(&scenario)
        .env("FLEETSIM_TEST_PANIC", "arrivals")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("fleetsim runs");
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("[   5.") && l.contains("s] devices "))
        .unwrap_or_else(|| panic!("no progress line at 5 s in:\n{stderr}"));
    assert!(line.ends_with("| errors 1"), "{line}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}
