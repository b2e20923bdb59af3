//! A remote run against `fleetsim emulate`'s DPS: no hub connection string, DPS creates the
//! identities and names the hub, and every device connects there.
//!
//! The run is stopped once every device is online and has had a message acknowledged, not after
//! a fixed duration: a device waits out DPS's `retry-after` (3 s) before its first status poll,
//! so a 6 s run left it ~3 s for everything else, and on a loaded machine that bet was lost.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common;

const DEVICES: u32 = 6;

#[test]
fn a_remote_run_provisions_through_fleetsim_emulates_dps() {
    let limit = Duration::from_secs(30);
    let dir = common::scratch_dir("emulate-dps");
    let mut emulate =
        common::Watched::spawn(&mut common::emulate_on_free_ports(&dir), "fleetsim emulate");
    let banner = emulate.read_until("ready", limit);
    assert!(banner.contains("with DPS:"), "{banner}");
    let target = std::fs::read_to_string(dir.join("target-dps.yaml")).unwrap();
    // Long enough never to end by itself: the test stops it.
    let scenario = format!(
        "name: remote-dps\nduration: 5m\n{target}fleet:\n  devices: {DEVICES}\n  arrival_rate: 10/s\n  provisioning: dps\ntelemetry:\n  interval: 1s\n"
    );
    std::fs::write(dir.join("remote-dps.yaml"), &scenario).unwrap();
    let report = dir.join("report.json");
    // No hub connection string: DPS creates the identities and names the hub.
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    command
        .args(["run", "--quiet", "--report"])
        .arg(&report)
        .arg(dir.join("remote-dps.yaml"))
        .env_remove("IOTHUB_CONNECTION_STRING")
        .env(
            "EZCA_TOKEN",
            std::fs::read_to_string(dir.join("ezca-token")).unwrap(),
        );
    let mut run = common::LiveRun::spawn(&mut command, limit);
    let devices = f64::from(DEVICES);
    run.wait_for(Duration::from_secs(90), |value| {
        value(r#"fleetsim_devices{state="online"}"#) == devices
            && value(r#"fleetsim_messages_total{result="acked"}"#) >= devices
    });
    let status = run.interrupt(Duration::from_secs(60));
    let output = run.output().to_string();
    let stopped = Command::new("kill")
        .args(["-INT", &emulate.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    emulate.wait_within(limit);
    // Stopped before its duration: neither pass nor fail (130, as for Ctrl-C).
    assert_eq!(status.code(), Some(130), "{output}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(json["interrupted"], true);
    assert_eq!(json["devices"]["connected"], DEVICES, "{json}");
    assert_eq!(json["errors"], json!({}));
    let p = &json["provisioning"];
    assert_eq!(p["provisioned"], DEVICES, "{p}");
    assert_eq!(p["hubs"][0]["host"], "fleetsim-hub.azure-devices.net");
    assert_eq!(p["hubs"][0]["devices"], DEVICES);
    assert!(
        p["service_counts"].is_null(),
        "a remote DPS has no counts of ours"
    );
}
