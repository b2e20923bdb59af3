//! Microsoft's unmodified Python SDKs against `fleetsim emulate`'s hub: azure-iot-hub 2.7 as the
//! operator and azure-iot-device 2.14 as the device (`tests/peers/hub_service.py`). Twin reported
//! and desired round trip, a direct method answered by the SDK device, service and registry
//! statistics, a query, and the device's connection state. The SDKs fix ports 443 (REST) and 8883
//! (MQTT) and check the host name, so the emulator runs on a loopback address of its own under a
//! host name of its own, mapped in /etc/hosts.

use serde_json::json;

use crate::common;

const HOST: &str = "fleetsim-c2d-test.azure-devices.net";
const IP: [u8; 4] = [127, 0, 15, 1];

#[test]
fn microsofts_sdks_drive_twins_methods_statistics_and_queries() {
    common::map_host(HOST, IP);
    let dir = common::scratch_dir("hub-service-sdk");
    let _emulate = common::emulate_for_sdks(&dir, IP, HOST, false);
    let driver = common::run_driver("hub_service.py", "sdk-device-1", &dir);
    let step = |name: &str| driver.step(name);

    let twin = step("twin");
    assert_eq!(twin["connection_state"], "Connected");
    assert_eq!(twin["reported"]["firmware"], "1.2.3");
    assert!(twin["status_update_time"].is_string(), "{twin}");

    assert_eq!(step("desired_patched")["desired"]["telemetryInterval"], 5);
    let round_trip = step("desired_round_trip");
    assert_eq!(round_trip["device_saw"][0]["telemetryInterval"], 5);
    assert_eq!(round_trip["device_saw"][0]["$version"], 2);
    assert_eq!(round_trip["reported"]["telemetryInterval"], 5);
    assert_eq!(round_trip["reported"]["firmware"], "1.2.3");
    let device_twin = &step("device_twin")["twin"];
    assert_eq!(device_twin["desired"]["telemetryInterval"], 5);
    assert_eq!(device_twin["reported"]["telemetryInterval"], 5);

    let method = step("method");
    assert_eq!(method["status"], 200);
    assert_eq!(
        method["payload"],
        json!({"echo": {"delay": 2}, "method": "reboot"})
    );

    let stats = step("statistics");
    assert_eq!(
        (stats["connected"].as_u64(), stats["total"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (stats["enabled"].as_u64(), stats["disabled"].as_u64()),
        (Some(1), Some(0))
    );

    let query = step("query");
    assert_eq!(query["type"], "twin");
    assert_eq!(query["ids"], json!(["sdk-device-1"]));
    assert!(query["continuation"].is_null(), "{query}");

    assert_eq!(step("device_connected_state")["state"], "Connected");
    assert_eq!(step("device_disconnected")["state"], "Disconnected");
}
