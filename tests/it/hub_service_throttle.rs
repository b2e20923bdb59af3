//! The hub emulator's throttles for the service side and device twins: twin reads, twin updates
//! (service PATCH/PUT and device reported PATCH share one), direct methods metered in 4 KB units,
//! and queries. Over REST a refused request is 429 ThrottlingException (429001) with
//! `Retry-After`; over MQTT a twin request is answered on `$iothub/twin/res/429/`. Within the
//! shaping window a request is held back instead.

use std::time::{Duration, Instant};

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::emulator::hub::throttle::HubLimits;
use fleetsim::emulator::{Emulators, HubConfig};
use reqwest::Method;
use serde_json::json;

use crate::common::{self, Answer, Service};

async fn hub(f: impl FnOnce(&mut HubLimits)) -> Emulators {
    let mut limits = HubLimits::unlimited();
    limits.shaping = Duration::ZERO;
    f(&mut limits);
    let config = HubConfig {
        limits,
        ..HubConfig::default()
    };
    common::start_emulators_with(Clock::real(), config).await
}

fn assert_throttled(a: &Answer, what: &str) {
    assert_eq!(a.status, 429, "{what}: {:?}", a.body);
    assert_eq!(a.error_code(), Some(429001), "{what}");
    assert_eq!(
        a.header("iothub-errorcode"),
        Some("ThrottlingException"),
        "{what}"
    );
    let retry: u64 = a
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{what}: Retry-After {retry}");
}

#[tokio::test]
async fn twin_reads_and_updates_over_rest() {
    let e = hub(|l| {
        l.twin_reads_per_sec = Some(1.0);
        l.twin_updates_per_sec = Some(1.0);
    })
    .await;
    HubRegistry(common::registry(&e))
        .register("th-1")
        .await
        .unwrap();
    let s = Service::new(&e);
    assert_eq!(s.get("/twins/th-1").await.status, 200);
    assert_throttled(&s.get("/twins/th-1").await, "second read");

    let body = json!({"tags": {"a": 1}});
    let patch = |s: Service, body: serde_json::Value| async move {
        s.call(Method::PATCH, "/twins/th-1", &[], Some(&body)).await
    };
    assert_eq!(patch(s.clone(), body.clone()).await.status, 200);
    assert_throttled(&patch(s.clone(), body.clone()).await, "second update");
    let put = s.call(Method::PUT, "/twins/th-1", &[], Some(&body)).await;
    assert_throttled(&put, "a replace is an update too");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        s.get("/twins/th-1").await.status,
        200,
        "a second later: room again"
    );
    let stats = e.hub.stats();
    assert_eq!(
        (stats.throttled_twin_reads, stats.throttled_twin_updates),
        (1, 2)
    );
    assert_eq!(stats.throttled, 3);
    e.shutdown().await;
}

#[tokio::test]
async fn device_twin_requests_over_mqtt_get_429_on_the_response_topic() {
    let e = hub(|l| {
        l.twin_reads_per_sec = Some(1.0);
        l.twin_updates_per_sec = Some(1.0);
    })
    .await;
    let mut device = common::online(&e, "th-mqtt").await;
    device.subscribe(&["$iothub/twin/res/#"]).await;
    device.publish("$iothub/twin/GET/?$rid=1", b"").await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/200/?$rid=1"
    );
    device.publish("$iothub/twin/GET/?$rid=2", b"").await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/429/?$rid=2"
    );

    // The device's reported patches share the update throttle with the service.
    let s = Service::new(&e);
    let body = json!({"properties": {"desired": {"x": 1}}});
    let a = s
        .call(Method::PATCH, "/twins/th-mqtt", &[], Some(&body))
        .await;
    assert_eq!(a.status, 200);
    let reported = "$iothub/twin/PATCH/properties/reported/?$rid=3";
    device.publish(reported, b"{\"x\":1}").await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/429/?$rid=3"
    );
    assert!(
        e.hub.is_connected("th-mqtt"),
        "a 429 does not end the session"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn direct_methods_are_metered_in_4_kb_units() {
    // 8 KB/s: two 4 KB units a second, a burst of two.
    let e = hub(|l| l.method_kb_per_sec = Some(8.0)).await;
    let mut device = common::online(&e, "th-m").await;
    device.subscribe(&["$iothub/methods/POST/#"]).await;
    let s = Service::new(&e);
    let offline = "th-none";
    HubRegistry(common::registry(&e))
        .register(offline)
        .await
        .unwrap();

    // A 5 KB payload takes both units; the next call, however small, is refused.
    let five_kb = json!({"methodName": "m", "payload": "x".repeat(5 * 1024)});
    let a = s.invoke(offline, five_kb).await;
    assert_eq!(a.status, 404, "metered, then found offline: {:?}", a.body);
    assert_throttled(
        &s.invoke("th-m", json!({"methodName": "m"})).await,
        "small call",
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Half a second later one unit is back: a small call passes, a 5 KB one does not.
    let small = s.invoke(offline, json!({"methodName": "m"})).await;
    assert_eq!(small.status, 404);
    let five_kb = json!({"methodName": "m", "payload": "x".repeat(5 * 1024)});
    assert_throttled(&s.invoke(offline, five_kb).await, "5 KB call");
    let stats = e.hub.stats();
    assert_eq!((stats.throttled_methods, stats.methods_invoked), (2, 2));
    e.shutdown().await;
}

#[tokio::test]
async fn queries_are_throttled_per_minute() {
    let e = hub(|l| l.queries_per_min = Some(2.0)).await;
    let s = Service::new(&e);
    for _ in 0..2 {
        assert_eq!(s.query("SELECT * FROM devices", &[]).await.status, 200);
    }
    let a = s.query("SELECT * FROM devices", &[]).await;
    assert_throttled(&a, "third query in a minute");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 20, "the next slot is ~30 s away: {retry}");
    assert_eq!(e.hub.stats().throttled_queries, 1);
    e.shutdown().await;
}

#[tokio::test]
async fn within_the_shaping_window_twin_reads_are_held_back() {
    let e = hub(|l| {
        l.twin_reads_per_sec = Some(2.0);
        l.shaping = Duration::from_secs(2);
    })
    .await;
    HubRegistry(common::registry(&e))
        .register("th-shape")
        .await
        .unwrap();
    let s = Service::new(&e);
    for _ in 0..2 {
        assert_eq!(s.get("/twins/th-shape").await.status, 200);
    }
    let t = Instant::now();
    assert_eq!(s.get("/twins/th-shape").await.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "held back {:?}",
        t.elapsed()
    );
    assert_eq!(e.hub.stats().throttled, 0);
    e.shutdown().await;
}
