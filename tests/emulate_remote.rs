//! `fleetsim emulate` as a standalone service, and `fleetsim run` with a *remote* target pointed
//! at it: the code path used against the real EZCA and IoT Hub (credentials from the environment,
//! trust bundles from files, the hub reached at an address other than its host name).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_remote_run_against_fleetsim_emulate() {
    let dir = std::env::temp_dir().join(format!("fleetsim-emulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut emulate = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args([
            "emulate",
            "--ca-port",
            "0",
            "--mqtt-port",
            "0",
            "--websocket-port",
            "0",
            "--registry-port",
            "0",
            "--dps-port",
            "0",
            "--dps-websocket-port",
            "0",
            "--dps-service-port",
            "0",
        ])
        .args(["--time-scale", "1s", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fleetsim emulate starts");
    let mut lines = BufReader::new(emulate.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("ready") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "emulate did not get ready: {banner}"
        );
    }
    assert!(
        banner.contains("EZCA:") && banner.contains("trust bundle:"),
        "{banner}"
    );
    #[cfg(unix)]
    for secret in ["ezca-token", "hub-connection-string"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret} is private");
    }

    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let scenario = format!(
        "name: remote-emulate\nduration: 8s\n{target}fleet:\n  devices: 10\n  arrival_rate: 10/s\ncertificate:\n  validity_days: 4\n  renew_at: 50%\ntelemetry:\n  interval: 1s\n"
    );
    std::fs::write(dir.join("remote.yaml"), &scenario).unwrap();
    let report = dir.join("report.json");
    let run = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "--quiet", "--report"])
        .arg(&report)
        .arg(dir.join("remote.yaml"))
        .env(
            "EZCA_TOKEN",
            std::fs::read_to_string(dir.join("ezca-token")).unwrap(),
        )
        .env(
            "IOTHUB_CONNECTION_STRING",
            std::fs::read_to_string(dir.join("hub-connection-string")).unwrap(),
        )
        .output()
        .unwrap();
    let stop = Command::new("kill")
        .args(["-INT", &emulate.id().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let emulate_status = emulate.wait().unwrap();
    assert!(
        run.status.success(),
        "run failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(emulate_status.success(), "emulate stops cleanly on Ctrl-C");

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(json["target"], "remote");
    assert_eq!(json["devices"]["connected"], 10);
    assert_eq!(
        json["devices"]["renewed"], 10,
        "the emulator's compressed clock drives renewal"
    );
    assert_eq!(json["devices"]["failed"], 0);
    assert_eq!(json["errors"], serde_json::json!({}));
    assert!(
        json["hub"].is_null(),
        "a remote run has no hub counters of its own"
    );
}
