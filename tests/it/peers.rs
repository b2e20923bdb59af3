//! The independent peers that `./scripts/test` installs are there at the versions the tests were
//! written against: Microsoft's Python SDKs for IoT Hub (service and device) and Event Hubs, in
//! the virtualenv at `target/peers/venv` (pins in `scripts/peers-requirements.txt`).

use std::process::Command;
use std::time::Duration;

use crate::common;

/// Imports each SDK (an installed but broken package fails here) and prints its version.
const PROBE: &str = "
import importlib.metadata as m
import azure.iot.hub, azure.iot.device, azure.eventhub
for name in ('azure-iot-hub', 'azure-iot-device', 'azure-eventhub'):
    print(name, m.version(name))
";

#[test]
fn microsofts_python_sdks_are_installed_at_their_pins() {
    let out = common::output_within(
        Command::new(common::python()).args(["-c", PROBE]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDKs do not import (run ./scripts/test to reinstall the peers): {stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let version = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no version of {name} in {stdout:?}"))
            .to_string()
    };
    assert!(version("azure-iot-hub").starts_with("2.7."), "{stdout}");
    assert!(version("azure-iot-device").starts_with("2.14."), "{stdout}");
    assert!(version("azure-eventhub").starts_with("5."), "{stdout}");
}
