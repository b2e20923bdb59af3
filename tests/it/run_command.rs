//! `fleetsim run` as a user runs it: Ctrl-C stops the devices and the report is still written.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ctrl_c_still_writes_the_report() {
    let dir = std::env::temp_dir().join(format!("fleetsim-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("long.yaml");
    std::fs::write(
        &scenario,
        "name: long\nduration: 10m\ntime_scale: 10s\ntarget:\n  embedded: {}\nfleet:\n  devices: 20\n  arrival_rate: 20/s\ntelemetry:\n  interval: 500ms\n",
    )
    .unwrap();
    let report = dir.join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "--quiet", "--report"])
        .arg(&report)
        .arg(&scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleetsim starts");
    std::thread::sleep(Duration::from_secs(5));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "fleetsim did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "exit {status:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("interrupted"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(json["interrupted"], true);
    assert_eq!(json["devices"]["connected"], 20);
    assert_eq!(json["devices"]["failed"], 0);
    assert!(json["messages"]["acked"].as_u64().unwrap() > 20);
    assert_eq!(json["messages"]["acked"], json["hub"]["messages"]);
}

#[test]
fn a_failed_threshold_fails_the_run_and_is_named() {
    let dir = std::env::temp_dir().join(format!("fleetsim-thresholds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("short.yaml");
    std::fs::write(
        &scenario,
        "name: short\nduration: 2s\ntarget:\n  embedded: {}\nfleet:\n  devices: 3\n  arrival_rate: 10/s\n\
         telemetry:\n  interval: 200ms\nreport:\n  interval: 500ms\n\
         thresholds:\n  - failed_devices == 0\n  - mqtt.publish p50 > 1h\n",
    )
    .unwrap();
    let report = dir.join("short.json");
    let output = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "--quiet", "--report"])
        .arg(&report)
        .arg(&scenario)
        .output()
        .expect("fleetsim runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("threshold failed: mqtt.publish p50 > 1h")
            && !stderr.contains("threshold failed: failed_devices"),
        "{stderr}"
    );
    assert!(
        stdout.contains("PASS  failed_devices == 0")
            && stdout.contains("FAIL  mqtt.publish p50 > 1h"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    let hlog = std::fs::read_to_string(dir.join("short.hlog")).expect("interval log written");
    let html = std::fs::read_to_string(dir.join("short.html")).expect("HTML report written");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(json["schema"], "fleetsim.report/v1");
    assert_eq!(json["thresholds"][0]["pass"], true);
    assert_eq!(json["thresholds"][1]["pass"], false);
    assert!(hlog.contains("mqtt.publish/ok"), "{hlog}");
    assert!(html.contains("<svg") && html.contains("mqtt.publish p50 &gt; 1h"));
}
