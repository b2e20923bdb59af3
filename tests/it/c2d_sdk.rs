//! Cloud-to-device messages with Microsoft's unmodified Python SDKs: azure-iot-hub 2.7's
//! `send_c2d_message` (AMQP) delivering through `fleetsim emulate` to a device running
//! azure-iot-device 2.14 (`on_message_received`, MQTT), properties intact, one message queued
//! before the device ever connected and one while it was disconnected
//! (`tests/peers/c2d_device.py`); and the SDK's message received
//! by a fleetsim device (`tests/peers/c2d_send.py`). The SDKs fix ports 5671, 8883 and 443 and
//! check host names, so each test's hub runs on a loopback address of its own under a host name
//! of its own, mapped in /etc/hosts.

use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::device::c2d::Received;
use fleetsim::device::{DeviceSession, DeviceTransport, Incoming};
use fleetsim::emulator::Emulators;
use fleetsim::iothub::mqtt::{MqttEndpoint, MqttTransport};
use fleetsim::iothub::topics::{self, CloudMessage};

use crate::common;

const HOST: &str = "fleetsim-c2d-sdk.azure-devices.net";
const IP: [u8; 4] = [127, 0, 16, 1];

#[test]
fn azure_iot_hub_sends_to_an_azure_iot_device_with_properties_intact() {
    common::map_host(HOST, IP);
    let dir = common::scratch_dir("c2d-sdk");
    let _emulate = common::emulate_for_sdks(&dir, IP, HOST, true);
    let driver = common::run_driver("c2d_device.py", "sdk-c2d-device", &dir);
    let received = driver.lines();
    assert_eq!(received.len(), 3, "{}\n{}", driver.stdout, driver.stderr);

    let offline = &received[0];
    assert_eq!(offline["message_id"], "offline-1", "queued while offline");
    assert_eq!(offline["data"], "sent while offline");
    assert_eq!(offline["ack"], "none");

    let m = &received[1];
    assert_eq!(m["message_id"], "sdk-msg-2");
    assert_eq!(m["correlation_id"], "sdk-corr-2");
    assert_eq!(m["content_type"], "application/json");
    assert_eq!(m["content_encoding"], "utf-8");
    assert_eq!(m["data"], r#"{"command": "reboot", "delay": 5}"#);
    let custom = &m["custom_properties"];
    assert_eq!(custom["colour"], "blue & green");
    assert_eq!(custom["path"], "/a/b?c=d");
    assert_eq!(custom["empty"], "");
    assert_eq!(custom.as_object().unwrap().len(), 3, "{custom}");
    let expiry = m["expiry_time_utc"].as_str().unwrap_or_default();
    assert!(
        expiry.starts_with("20") && expiry.ends_with('Z'),
        "{expiry}"
    );

    let away = &received[2];
    assert_eq!(
        away["message_id"], "away-3",
        "sent while the device was away"
    );
    assert_eq!(away["data"], "sent while disconnected");
}

const FLEETSIM_HOST: &str = "fleetsim-c2d-device.azure-devices.net";
const FLEETSIM_IP: [u8; 4] = [127, 0, 16, 2];

/// Emulators with AMQP on FLEETSIM_IP:5671 for FLEETSIM_HOST (MQTT anywhere), and the TLS
/// root written for the Python peer.
async fn emulators_for_the_sdk(dir: &std::path::Path) -> (Emulators, std::path::PathBuf) {
    common::map_host(FLEETSIM_HOST, FLEETSIM_IP);
    let ca = fleetsim::emulator::CaConfig {
        clock: Clock::real(),
        max_cert_life_days: 30,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: false,
    };
    let hub = fleetsim::emulator::HubConfig {
        host_name: FLEETSIM_HOST.into(),
        ..Default::default()
    };
    let addrs = fleetsim::emulator::Addresses {
        amqp: std::net::SocketAddr::from((FLEETSIM_IP, 5671)),
        ..fleetsim::emulator::Addresses::ephemeral([127, 0, 0, 1].into())
    };
    let e = Emulators::start_on(addrs, &ca, &hub)
        .await
        .expect("emulators with AMQP on 127.0.16.2:5671");
    let bundle = dir.join("trust.pem");
    std::fs::write(&bundle, fleetsim::crypto::cert_to_pem(&e.tls_root)).unwrap();
    (e, bundle)
}

/// fleetsim's device transport to `e`'s hub, named FLEETSIM_HOST.
fn transport_to(e: &Emulators) -> MqttTransport {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    MqttTransport::new(
        MqttEndpoint {
            host: e.hub_mqtt_addr.ip().to_string(),
            port: e.hub_mqtt_addr.port(),
            hub_host: FLEETSIM_HOST.into(),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            websocket: false,
        },
        roots,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleetsim_device_receives_the_sdks_message_with_its_properties() {
    let python = common::python();
    let dir = common::scratch_dir("c2d-sdk-fleetsim");
    let (e, bundle) = emulators_for_the_sdk(&dir).await;
    let id = "fleetsim-c2d-1";
    let ca = common::ezca(&e).await;
    HubRegistry(common::registry(&e))
        .register(id)
        .await
        .unwrap();
    let (key, issued) = common::enrol(&ca, id).await;
    let transport = transport_to(&e);
    let mut session = DeviceTransport::connect(&transport, id, issued.chain.clone(), &key)
        .await
        .unwrap();
    let filter = topics::Subscription::C2d.filter(id);
    DeviceSession::subscribe(&mut session, vec![(filter, true)])
        .await
        .unwrap();

    let hub_cs = e.hub.connection_string().to_secret_string();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/c2d_send.py");
    let sender = tokio::process::Command::new(python)
        .arg(script)
        .arg(id)
        .env("FLEETSIM_HUB_CS", &hub_cs)
        .env("FLEETSIM_CA_BUNDLE", &bundle)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), sender)
        .await
        .expect("c2d_send.py finishes within 90 s")
        .unwrap();
    assert!(
        out.status.success(),
        "c2d_send.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let incoming = DeviceSession::incoming(&mut session);
    let delivery = match tokio::time::timeout(Duration::from_secs(10), incoming).await {
        Ok(Incoming::Message(m)) => m,
        other => panic!("expected the SDK's message, got {other:?}"),
    };
    let Some(CloudMessage::C2d { properties }) = topics::parse_cloud_message(&delivery.topic, id)
    else {
        panic!("not a C2D topic: {}", delivery.topic)
    };
    let m = Received::from_properties(properties);
    assert_eq!(m.message_id.as_deref(), Some("sdk-msg-1"));
    assert_eq!(m.correlation_id.as_deref(), Some("sdk-corr-1"));
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(
        m.to.as_deref(),
        Some("/devices/fleetsim-c2d-1/messages/devicebound")
    );
    assert_eq!(
        m.properties,
        vec![("colour".to_string(), Some("blue".to_string()))]
    );
    assert_eq!(&delivery.payload[..], b"hello from azure-iot-hub");
    DeviceSession::close(session).await;
    let _ = std::fs::remove_dir_all(&dir);
    e.shutdown().await;
}
