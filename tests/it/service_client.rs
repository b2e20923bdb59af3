//! fleetsim's service client (`iothub::service`, the operator's side of IoT Hub's REST API)
//! against the hub emulator, with devices on fleetsim's own MQTT transport: twins and etags,
//! desired pushes, direct methods (answered, offline, late, after a connect timeout),
//! statistics, queries with paging, and the hub's refusals as typed errors.

use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::emulator::Emulators;
use fleetsim::iothub::mqtt::{Incoming, MqttSession};
use fleetsim::iothub::registry::RegistryAuth;
use fleetsim::iothub::service::{CallError, MethodCall, ServiceClient};
use fleetsim::iothub::topics::{self, CloudMessage};
use fleetsim::metrics::Outcome;
use serde_json::{Value, json};

use crate::common;

fn client(e: &Emulators) -> ServiceClient {
    let auth = RegistryAuth::Sas(e.hub.connection_string());
    ServiceClient::new(
        &e.hub_registry_url,
        auth,
        std::slice::from_ref(&e.tls_root),
        true,
    )
    .expect("service client")
}

async fn register(e: &Emulators, id: &str) {
    HubRegistry(common::registry(e))
        .register(id)
        .await
        .expect("register");
}

/// Device `id`, registered, enrolled and connected, subscribed to `filters`.
async fn connected(e: &Emulators, id: &str, filters: &[&str]) -> MqttSession {
    register(e, id).await;
    let ca = common::ezca(e).await;
    let (key, issued) = common::enrol(&ca, id).await;
    let transport = common::transport(e);
    let mut session = transport
        .connect(id, issued.chain.clone(), key.private_key_der())
        .await
        .expect("connect");
    if !filters.is_empty() {
        let filters = filters.iter().map(|f| (f.to_string(), false)).collect();
        session.subscribe(filters).await.expect("subscribe");
    }
    session
}

/// The next message the hub sends `session` (10 s at most).
async fn next_message(session: &mut MqttSession, id: &str) -> (CloudMessage, Value) {
    let incoming = tokio::time::timeout(Duration::from_secs(10), session.incoming())
        .await
        .expect("a message in time");
    let Incoming::Message(m) = incoming else {
        panic!("the connection closed: {incoming:?}");
    };
    let what = topics::parse_cloud_message(&m.topic, id).expect("a topic IoT Hub sends");
    (
        what,
        serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_are_read_patched_and_replaced_with_etags() {
    let e = common::start_emulators(Clock::real()).await;
    let service = client(&e);
    let mut device = connected(&e, "twin-1", &["$iothub/twin/PATCH/properties/desired/#"]).await;
    let twin = service.get_twin("twin-1").await.unwrap();
    assert_eq!(twin.device_id, "twin-1");
    let etag = twin.etag.clone().expect("an etag");
    let version = twin.desired_version().expect("a desired $version");

    let patched = service
        .patch_desired("twin-1", &json!({"telemetryInterval": 5}), Some(&etag))
        .await
        .unwrap();
    assert_eq!(patched.desired_version(), Some(version + 1));
    assert_eq!(patched.properties.desired["telemetryInterval"], 5);
    assert_ne!(patched.etag.as_deref(), Some(etag.as_str()));
    // The connected device hears of it.
    let (what, body) = next_message(&mut device, "twin-1").await;
    assert_eq!(
        what,
        CloudMessage::DesiredPatch {
            version: Some(version + 1)
        }
    );
    assert_eq!(body["telemetryInterval"], 5);

    // The old etag is stale now.
    let stale = service
        .patch_desired("twin-1", &json!({"telemetryInterval": 6}), Some(&etag))
        .await
        .unwrap_err();
    assert!(matches!(stale, CallError::PreconditionFailed), "{stale:?}");
    assert_eq!(stale.outcome(), Outcome::Rejected);

    let mut replacement = patched.clone();
    replacement.tags = Some(serde_json::from_value(json!({"ring": "canary"})).unwrap());
    replacement.properties.desired = serde_json::from_value(json!({"logLevel": "debug"})).unwrap();
    let replaced = service
        .replace_twin("twin-1", &replacement, patched.etag.as_deref())
        .await
        .unwrap();
    assert_eq!(replaced.tags.unwrap()["ring"], "canary");
    assert!(
        replaced
            .properties
            .desired
            .get("telemetryInterval")
            .is_none()
    );
    assert_eq!(replaced.properties.desired["logLevel"], "debug");

    let unknown = service.get_twin("nobody").await.unwrap_err();
    assert_eq!(unknown.kind(), "http_404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_are_answered_or_fail_as_iot_hub_says() {
    let e = common::start_emulators(Clock::real()).await;
    let service = std::sync::Arc::new(client(&e));
    let mut device = connected(&e, "method-1", &["$iothub/methods/POST/#"]).await;
    let call = MethodCall::new("reboot", json!({"delay": 1}));
    let invoked = {
        let (service, call) = (service.clone(), call.clone());
        tokio::spawn(async move { service.invoke_method("method-1", &call).await })
    };
    let (what, body) = next_message(&mut device, "method-1").await;
    let CloudMessage::MethodRequest { name, rid } = what else {
        panic!("a method request, got {what:?}");
    };
    assert_eq!((name.as_str(), body), ("reboot", json!({"delay": 1})));
    let answer = serde_json::to_vec(&json!({"rebooting": true})).unwrap();
    device
        .publish(topics::method_response(201, &rid), answer, false)
        .await
        .unwrap();
    let response = invoked.await.unwrap().unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.payload, json!({"rebooting": true}));

    // Registered but not connected: offline at once (no connect timeout).
    register(&e, "method-off").await;
    let offline = service
        .invoke_method("method-off", &call)
        .await
        .unwrap_err();
    assert!(matches!(offline, CallError::Offline), "{offline:?}");
    assert_eq!(offline.outcome(), Outcome::Offline);

    // Connected, subscribed, silent: 504101 after the response timeout.
    let quiet = MethodCall {
        response_timeout_in_seconds: 5,
        ..call.clone()
    };
    let started = std::time::Instant::now();
    let late = service.invoke_method("method-1", &quiet).await.unwrap_err();
    assert!(matches!(late, CallError::DeviceTimeout), "{late:?}");
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_waits_for_a_device_within_its_connect_timeout() {
    let e = common::start_emulators(Clock::real()).await;
    let service = std::sync::Arc::new(client(&e));
    register(&e, "method-late").await;
    let call = MethodCall {
        connect_timeout_in_seconds: 10,
        ..MethodCall::new("ping", Value::Null)
    };
    let invoked = {
        let service = service.clone();
        tokio::spawn(async move { service.invoke_method("method-late", &call).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "method-late").await;
    let mut device = common::transport(&e)
        .connect("method-late", issued.chain.clone(), key.private_key_der())
        .await
        .unwrap();
    device
        .subscribe(vec![("$iothub/methods/POST/#".into(), false)])
        .await
        .unwrap();
    let (what, _) = next_message(&mut device, "method-late").await;
    let CloudMessage::MethodRequest { rid, .. } = what else {
        panic!("a method request, got {what:?}");
    };
    device
        .publish(topics::method_response(200, &rid), b"null".to_vec(), false)
        .await
        .unwrap();
    let response = invoked.await.unwrap().unwrap();
    assert_eq!((response.status, response.payload), (200, Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_and_queries_page_through_the_registry() {
    let e = common::start_emulators(Clock::real()).await;
    let service = client(&e);
    for i in 0..6 {
        register(&e, &format!("query-{i}")).await;
    }
    let _online = connected(&e, "query-6", &[]).await;
    let stats = service.service_statistics().await.unwrap();
    assert_eq!(stats.connected_device_count, 1);
    let registry = service.registry_statistics().await.unwrap();
    assert_eq!(registry.total_device_count, 7);
    assert_eq!(registry.enabled_device_count, 7);

    let first = service
        .query_page("SELECT * FROM devices", Some(3), None)
        .await
        .unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(first.continuation.is_some(), "more pages");
    let all = service
        .query_all("SELECT * FROM devices", Some(3))
        .await
        .unwrap();
    assert_eq!(all.pages, 3);
    let mut ids = all.device_ids();
    ids.sort();
    assert_eq!(ids.len(), 7);
    assert_eq!(ids[0], "query-0");
    let connected = service
        .query_all(
            "SELECT COUNT() AS n FROM devices WHERE connectionState = 'Connected'",
            None,
        )
        .await
        .unwrap();
    assert_eq!(connected.count(), Some(1));

    let bad = service.query_all("SELECT * FROM", None).await.unwrap_err();
    assert_eq!(bad.kind(), "http_400", "{bad}");
    assert_eq!(bad.outcome(), Outcome::Rejected);
}
