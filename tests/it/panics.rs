//! A panic in any task of a run (a device, an arrival process, an emulator's handler) is caught
//! at the task's boundary, counted where it happened, shown in the report and fails the run. The
//! panics are injected through the documented test hook `FLEETSIM_TEST_PANIC` (src/inject.rs),
//! so the real catch paths are exercised.

use std::process::Command;

/// Runs a small embedded scenario with `point` panicking; returns (exit code, report, stdout).
fn run_with_panic(point: &str) -> (Option<i32>, serde_json::Value, String) {
    let dir = std::env::temp_dir().join(format!("fleetsim-panic-{point}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("s.yaml");
    std::fs::write(
        &scenario,
        "name: panics\nduration: 3s\ntarget:\n  embedded: {}\nfleet:\n  devices: 3\n  arrival_rate: 20/s\n\
         telemetry:\n  interval: 200ms\n",
    )
    .unwrap();
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
