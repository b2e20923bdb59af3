//! Direct methods through the hub emulator on real sockets: `POST /twins/{id}/methods` delivered
//! on `$iothub/methods/POST/{name}/?$rid=` and answered from `$iothub/methods/res/{status}/`;
//! an offline device (404103, with and without a connect timeout), no answer in time (504101),
//! answers the hub cannot pass on (502, counted, the session carries on), and requests IoT Hub
//! refuses (timeouts out of range, payloads over 128 KB).

use std::time::{Duration, Instant};

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use reqwest::Method;
use rumqttc::mqttbytes::v4::Packet;
use serde_json::{Value, json};

use crate::common::{self, RawMqtt, Service};

const METHODS: &str = "$iothub/methods/POST/#";

/// The request id of a method request's topic.
fn rid(topic: &str) -> String {
    topic.split("$rid=").nth(1).expect("a $rid").to_string()
}

/// Invokes `request` on `id` in its own task.
fn invoke(s: &Service, id: &str, request: Value) -> tokio::task::JoinHandle<common::Answer> {
    let (s, id) = (s.clone(), id.to_string());
    tokio::spawn(async move { s.invoke(&id, request).await })
}

async fn subscribed(e: &fleetsim::emulator::Emulators, id: &str) -> RawMqtt {
    let mut device = common::online(e, id).await;
    device.subscribe(&[METHODS]).await;
    device
}

#[tokio::test]
async fn a_method_round_trip() {
    let e = common::start_emulators(Clock::real()).await;
    let mut device = subscribed(&e, "m-1").await;
    let s = Service::new(&e);

    let request =
        json!({"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 10});
    let call = invoke(&s, "m-1", request);
    let p = device.next_publish().await;
    assert!(
        p.topic.starts_with("$iothub/methods/POST/reboot/?$rid="),
        "{}",
        p.topic
    );
    assert_eq!(p.qos, rumqttc::mqttbytes::QoS::AtMostOnce);
    assert_eq!(
        serde_json::from_slice::<Value>(&p.payload).unwrap(),
        json!({"delay": 1})
    );
    let answer = format!("$iothub/methods/res/201/?$rid={}", rid(&p.topic));
    device.publish(&answer, br#"{"done": true}"#).await;
    let a = call.await.unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body, json!({"status": 201, "payload": {"done": true}}));

    // No payload is a JSON null; an empty answer is a null payload.
    let call = invoke(&s, "m-1", json!({"methodName": "ping"}));
    let p = device.next_publish().await;
    assert_eq!(&p.payload[..], b"null");
    device
        .publish(
            &format!("$iothub/methods/res/200/?$rid={}", rid(&p.topic)),
            b"",
        )
        .await;
    assert_eq!(
        call.await.unwrap().body,
        json!({"status": 200, "payload": null})
    );
    let stats = e.hub.stats();
    assert_eq!(
        (
            stats.methods_invoked,
            stats.methods_answered,
            stats.methods_waiting
        ),
        (2, 2, 0)
    );
    e.shutdown().await;
}

#[tokio::test]
async fn offline_devices_get_404103_after_the_connect_timeout() {
    let e = common::start_emulators(Clock::real()).await;
    HubRegistry(common::registry(&e))
        .register("m-off")
        .await
        .unwrap();
    let s = Service::new(&e);

    let t = Instant::now();
    let a = s.invoke("m-off", json!({"methodName": "reboot"})).await;
    assert_eq!((a.status, a.error_code()), (404, Some(404103)));
    assert_eq!(a.header("iothub-errorcode"), Some("DeviceNotOnline"));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "no connect timeout: at once"
    );

    let t = Instant::now();
    let request = json!({"methodName": "reboot", "connectTimeoutInSeconds": 1});
    let a = s.invoke("m-off", request).await;
    assert_eq!(a.status, 404);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "waited for the device"
    );

    // Connected but not subscribed to methods is not online for methods.
    let mut idle = common::online(&e, "m-idle").await;
    let a = s.invoke("m-idle", json!({"methodName": "reboot"})).await;
    assert_eq!(a.error_code(), Some(404103));
    idle.send(Packet::PingReq).await;
    assert!(matches!(idle.recv().await, Some(Packet::PingResp)));

    let unknown = s.invoke("nobody", json!({"methodName": "reboot"})).await;
    assert_eq!((unknown.status, unknown.error_code()), (404, Some(404001)));
    assert_eq!(e.hub.stats().methods_offline, 3);
    e.shutdown().await;
}

#[tokio::test]
async fn a_device_that_comes_online_within_the_connect_timeout_is_called() {
    let e = common::start_emulators(Clock::real()).await;
    HubRegistry(common::registry(&e))
        .register("m-late")
        .await
        .unwrap();
    let s = Service::new(&e);
    let request = json!({"methodName": "wake", "connectTimeoutInSeconds": 20});
    let call = invoke(&s, "m-late", request);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut device = subscribed(&e, "m-late").await;
    let p = device.next_publish().await;
    assert!(
        p.topic.starts_with("$iothub/methods/POST/wake/"),
        "{}",
        p.topic
    );
    device
        .publish(
            &format!("$iothub/methods/res/200/?$rid={}", rid(&p.topic)),
            b"\"up\"",
        )
        .await;
    let a = call.await.unwrap();
    assert_eq!(a.body, json!({"status": 200, "payload": "up"}));
    e.shutdown().await;
}

#[tokio::test]
async fn no_answer_in_time_is_504101_and_a_late_answer_is_dropped() {
    let e = common::start_emulators(Clock::real()).await;
    let mut device = subscribed(&e, "m-slow").await;
    let s = Service::new(&e);
    let t = Instant::now();
    let call = invoke(
        &s,
        "m-slow",
        json!({"methodName": "slow", "responseTimeoutInSeconds": 5}),
    );
    let p = device.next_publish().await;
    let a = call.await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(5));
    assert_eq!((a.status, a.error_code()), (504, Some(504101)));
    assert_eq!(a.header("iothub-errorcode"), Some("GatewayTimeout"));

    device
        .publish(
            &format!("$iothub/methods/res/200/?$rid={}", rid(&p.topic)),
            b"{}",
        )
        .await;
    device.send(Packet::PingReq).await;
    assert!(
        matches!(device.recv().await, Some(Packet::PingResp)),
        "the session carries on"
    );
    let stats = e.hub.stats();
    assert_eq!(
        (
            stats.methods_timed_out,
            stats.method_responses_unmatched,
            stats.methods_waiting
        ),
        (1, 1, 0)
    );
    e.shutdown().await;
}

#[tokio::test]
async fn malformed_answers_fail_the_call_not_the_session() {
    let e = common::start_emulators(Clock::real()).await;
    let mut device = subscribed(&e, "m-bad").await;
    let s = Service::new(&e);

    for (status, payload) in [("200", &b"not json"[..]), ("ok", b"{}")] {
        let call = invoke(
            &s,
            "m-bad",
            json!({"methodName": "m", "responseTimeoutInSeconds": 10}),
        );
        let p = device.next_publish().await;
        let topic = format!("$iothub/methods/res/{status}/?$rid={}", rid(&p.topic));
        device.publish(&topic, payload).await;
        let a = call.await.unwrap();
        assert_eq!(a.status, 502, "{status} {payload:?}: {:?}", a.body);
        assert_eq!(
            a.header("iothub-errorcode"),
            Some("InvalidResponseWhileProxying")
        );
    }
    // Answers for calls nobody made are dropped; the next real call still works.
    device
        .publish("$iothub/methods/res/200/?$rid=999999", b"{}")
        .await;
    device.publish("$iothub/methods/res/200/", b"{}").await;
    let call = invoke(
        &s,
        "m-bad",
        json!({"methodName": "m", "responseTimeoutInSeconds": 10}),
    );
    let p = device.next_publish().await;
    device
        .publish(
            &format!("$iothub/methods/res/200/?$rid={}", rid(&p.topic)),
            b"[1]",
        )
        .await;
    assert_eq!(
        call.await.unwrap().body,
        json!({"status": 200, "payload": [1]})
    );
    let stats = e.hub.stats();
    assert_eq!(
        (
            stats.method_responses_malformed,
            stats.method_responses_unmatched
        ),
        (2, 2)
    );
    assert_eq!(e.hub.device_stats("m-bad").drops, 0);
    e.shutdown().await;
}

#[tokio::test]
async fn requests_iot_hub_refuses() {
    let e = common::start_emulators(Clock::real()).await;
    let _device = subscribed(&e, "m-req").await;
    let s = Service::new(&e);
    let bad = [
        json!({"payload": 1}),
        json!({"methodName": ""}),
        json!({"methodName": "a/b"}),
        json!({"methodName": "m", "responseTimeoutInSeconds": 4}),
        json!({"methodName": "m", "responseTimeoutInSeconds": 301}),
        json!({"methodName": "m", "connectTimeoutInSeconds": 301}),
    ];
    for request in bad {
        let a = s.invoke("m-req", request.clone()).await;
        assert_eq!((a.status, a.error_code()), (400, Some(400004)), "{request}");
    }
    let not_json = s.call_raw(Method::POST, "/twins/m-req/methods", b"{").await;
    assert_eq!(not_json.error_code(), Some(400006));

    let big = json!({"methodName": "m", "payload": "x".repeat(128 * 1024)});
    let a = s.invoke("m-req", big).await;
    assert_eq!((a.status, a.error_code()), (413, Some(413001)));
    assert_eq!(a.header("iothub-errorcode"), Some("MessageTooLarge"));
    let stats = e.hub.stats();
    assert_eq!((stats.too_large, stats.methods_invoked), (1, 0));
    e.shutdown().await;
}
