//! What the hub emulator's service API says about devices being there: `connectionState`,
//! `connectionStateUpdatedTime` and `lastActivityTime` in the device JSON and the twin, following
//! the MQTT session; `GET /statistics/service` and `/statistics/devices`.

use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use rumqttc::mqttbytes::v4::Packet;
use serde_json::Value;

use crate::common::{self, Service};

const NEVER: &str = "0001-01-01T00:00:00";

/// Polls `GET /devices/{id}` until its connectionState is `state` (5 s at most).
async fn wait_state(s: &Service, id: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let device = s.get(&format!("/devices/{id}")).await.body;
        if device["connectionState"] == state {
            return device;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {state}: {device}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connection_state_follows_the_session() {
    let e = common::start_emulators(Clock::real()).await;
    let s = Service::new(&e);
    HubRegistry(common::registry(&e))
        .register("pr-other")
        .await
        .unwrap();
    let stats = s.get("/statistics/service").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.body, serde_json::json!({"connectedDeviceCount": 0}));

    let mut device = common::online(&e, "pr-1").await;
    let connected = wait_state(&s, "pr-1", "Connected").await;
    let since = connected["connectionStateUpdatedTime"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(since.starts_with("20") && since.ends_with('Z'), "{since}");
    let active = connected["lastActivityTime"].as_str().unwrap().to_string();
    assert!(active.starts_with("20"), "{active}");
    let twin = s.get("/twins/pr-1").await.body;
    assert_eq!(twin["connectionState"], "Connected");
    assert_eq!(twin["lastActivityTime"], active.as_str());
    let other = s.get("/devices/pr-other").await.body;
    assert_eq!(other["connectionState"], "Disconnected");
    assert_eq!(other["connectionStateUpdatedTime"], NEVER);
    assert_eq!(other["cloudToDeviceMessageCount"], 0);
    let stats = s.get("/statistics/service").await.body;
    assert_eq!(stats["connectedDeviceCount"], 1);
    assert!(e.hub.device("pr-1").unwrap().connection_state == "Connected");

    // Telemetry is activity.
    tokio::time::sleep(Duration::from_millis(20)).await;
    device.publish("devices/pr-1/messages/events/", b"{}").await;
    device.send(Packet::PingReq).await;
    assert!(matches!(device.recv().await, Some(Packet::PingResp)));
    let later = s.get("/devices/pr-1").await.body;
    assert!(later["lastActivityTime"].as_str().unwrap() > active.as_str());

    device.send(Packet::Disconnect).await;
    let gone = wait_state(&s, "pr-1", "Disconnected").await;
    assert!(gone["connectionStateUpdatedTime"].as_str().unwrap() > since.as_str());
    assert_ne!(gone["lastActivityTime"], NEVER, "the last activity stays");
    let stats = s.get("/statistics/service").await.body;
    assert_eq!(stats["connectedDeviceCount"], 0);
    e.shutdown().await;
}

#[tokio::test]
async fn a_dropped_device_is_disconnected_too() {
    let e = common::start_emulators(Clock::real()).await;
    let s = Service::new(&e);
    let mut device = common::online(&e, "pr-drop").await;
    wait_state(&s, "pr-drop", "Connected").await;
    assert!(e.hub.disable_device("pr-drop"));
    assert_eq!(device.recv().await, None, "disabling drops the connection");
    let gone = wait_state(&s, "pr-drop", "Disconnected").await;
    assert_eq!(gone["status"], "disabled");
    e.shutdown().await;
}

#[tokio::test]
async fn device_statistics_count_the_registry() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = HubRegistry(common::registry(&e));
    for id in ["st-1", "st-2", "st-3"] {
        registry.register(id).await.unwrap();
    }
    assert!(e.hub.disable_device("st-2"));
    let s = Service::new(&e);
    let stats = s.get("/statistics/devices").await;
    assert_eq!(stats.status, 200);
    assert_eq!(
        stats.body,
        serde_json::json!({"totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1})
    );
    // Without a valid token there are no statistics.
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap();
    let url = format!(
        "{}/statistics/devices?api-version=2021-04-12",
        e.hub_registry_url
    );
    let anonymous = http.get(url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    e.shutdown().await;
}
