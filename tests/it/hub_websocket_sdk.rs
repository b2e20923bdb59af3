//! Microsoft's Python SDKs on one hub port, as IoT Hub serves 443: azure-iot-device 2.14 with
//! `websockets=True` connects, sends telemetry and reads its twin over
//! `wss://{host}:443/$iothub/websocket`, while azure-iot-hub 2.7 uses the registry on the same
//! port, against `fleetsim emulate --azure-ports` (`tests/peers/hub_websocket.py`). The SDKs fix
//! the ports and check the host name: the emulator runs on a loopback address of its own under a
//! host name of its own, mapped in /etc/hosts.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;

const HOST: &str = "fleetsim-ws-test.azure-devices.net";
const IP: &str = "127.0.15.7";

#[test]
fn the_device_sdk_over_websocket_and_the_registry_share_port_443() {
    common::map_host(HOST, [127, 0, 15, 7]);
    let dir = common::scratch_dir("hub-websocket-sdk");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    command
        .args([
            "emulate",
            "--azure-ports",
            "--no-dps",
            "--ip",
            IP,
            "--hub-host",
            HOST,
        ])
        .args(["--ca-port", "0", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped());
    let mut emulate = common::Watched::spawn(&mut command, "fleetsim emulate --azure-ports");
    emulate.read_until("ready", Duration::from_secs(60));

    let driver = common::run_driver("hub_websocket.py", "ws-sdk-device", &dir);
    let step = |name: &str| driver.step(name);
    assert_eq!(step("sent")["messages"], 3);
    assert_eq!(step("device_twin")["reported"]["transport"], "websocket");
    let registry = step("registry_twin");
    assert_eq!(registry["reported"]["transport"], "websocket");
    assert_eq!(registry["connection_state"], "Connected");
    assert_eq!(step("disconnected")["state"], "Disconnected");
    step("deleted");
}

#[test]
fn a_port_that_cannot_be_bound_says_why() {
    let bin = env!("CARGO_BIN_EXE_fleetsim");
    let ip = "127.0.15.8";
    let unprivileged_from: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    // Where binding 443 needs a privilege, run without it (as nobody when we are root) and expect
    // the privilege named; where it does not, hold the port ourselves and expect "in use".
    let needs_privilege = unprivileged_from > 443;
    let _held = match needs_privilege {
        true => None,
        false => Some(std::net::TcpListener::bind((ip, 443)).expect("hold 443")),
    };
    let mut command = match needs_privilege && is_root() {
        true => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(bin);
            c
        }
        false => Command::new(bin),
    };
    let dir = std::env::temp_dir().join(format!("fleetsim-bind-{}", std::process::id()));
    command
        .args([
            "emulate",
            "--azure-ports",
            "--no-dps",
            "--ip",
            ip,
            "--ca-port",
            "0",
            "--dir",
        ])
        .arg(&dir);
    let out = common::output_within(&mut command, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let expected = match needs_privilege {
        true => "CAP_NET_BIND_SERVICE",
        false => "another process listens there",
    };
    assert!(stderr.contains(expected), "{stderr}");
    assert!(
        stderr.contains(&format!("{ip}:")),
        "names the address: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether this process runs as root (uid 0), read from /proc.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
