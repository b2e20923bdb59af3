//! `fleetsim emulate` as a standalone service, and `fleetsim run` with a *remote* target pointed
//! at it: the code path used against the real EZCA and IoT Hub (credentials from the environment,
//! trust bundles from files, the hub reached at an address other than its host name). Every wait
//! on a child has a hard limit: a silent hang fails the test instead of hanging the suite.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, Watched};

/// Time for `emulate` to print its banner, and for it to stop after Ctrl-C.
const EMULATE_LIMIT: Duration = Duration::from_secs(30);
/// The run lasts 8 s plus setup and drain; a loaded 2-core machine gets ample slack.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_remote_run_against_fleetsim_emulate() {
    let dir = common::scratch_dir("emulate");
    let mut emulate = Watched::spawn(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
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
                "--amqp-port",
                "0",
            ])
            .args(["--time-scale", "1s", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        "fleetsim emulate",
    );
    let banner = emulate.read_until("ready", EMULATE_LIMIT);
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
    let run = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
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
            ),
        RUN_LIMIT,
    );
    let stop = Command::new("kill")
        .args(["-INT", &emulate.id().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let emulate_status = emulate.wait_within(EMULATE_LIMIT);
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
