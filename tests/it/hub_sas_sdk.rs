//! Symmetric-key devices as Microsoft's SDK samples make them, through `fleetsim emulate`
//! (`tests/peers/hub_sas.py`): azure-iot-hub 2.7's `create_device_with_sas(id, None, None,
//! "enabled")` gets keys the hub generated; azure-iot-device 2.14's
//! `IoTHubDeviceClient.create_from_connection_string` built from them connects, sends telemetry
//! and reads its twin; with a short `sastoken_ttl` the SDK renews its token and reconnects with
//! the new one, and still sends. The SDKs fix ports 443 and 8883 and check the host name, so the
//! emulator runs on a loopback address of its own under a host name of its own.

use serde_json::Value;

use crate::common;

const HOST: &str = "fleetsim-sas-test.azure-devices.net";
const IP: [u8; 4] = [127, 0, 17, 1];

#[test]
fn sdk_devices_with_hub_generated_keys_connect_send_and_renew_their_tokens() {
    common::map_host(HOST, IP);
    let dir = common::scratch_dir("hub-sas-sdk");
    let _emulate = common::emulate_for_sdks(&dir, IP, HOST, false);
    let driver = common::run_driver("hub_sas.py", "sas-sdk-device", &dir);
    let lines = driver.lines();
    let created: Vec<&Value> = lines.iter().filter(|v| v["step"] == "created").collect();
    let step = |name: &str| driver.step(name);
    let stdout = &driver.stdout;

    // The hub generated both keys, as IoT Hub does: 32 bytes in base64.
    assert_eq!(created.len(), 2, "{stdout}");
    for c in created {
        assert_eq!(c["type"], "sas");
        assert_eq!(c["primary_len"], 44, "{c}");
        assert_eq!(c["secondary_len"], 44, "{c}");
        assert_eq!(c["keys_differ"], true);
        assert_eq!(c["generation_id"].as_str().map(str::len), Some(18), "{c}");
        assert_eq!(c["cloud_to_device_message_count"], 0);
    }
    step("connected");
    assert_eq!(step("sent")["messages"], 3);
    assert_eq!(step("device_twin")["reported"]["auth"], "sas");
    assert_eq!(step("registry")["connection_state"], "Connected");

    // The SDK logged in again with a token of a later expiry, and was connected afterwards.
    let renewed = step("renewed");
    let expiries: Vec<u64> = renewed["expiries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(expiries.len() >= 2, "no renewal: {renewed}");
    assert!(
        expiries.windows(2).all(|w| w[1] > w[0]),
        "each login used a newer token: {renewed}"
    );
    // It went down for the renewal and came back: connected, disconnected, connected.
    let states: Vec<bool> = renewed["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    assert!(
        states.windows(3).any(|w| w == [true, false, true]),
        "no reconnection: {renewed}"
    );
    assert_eq!(renewed["connected"], true, "{renewed}");
    assert_eq!(renewed["connection_state"], "Connected", "{renewed}");
    step("deleted");
}
