//! Device twins through the hub emulator's service REST API and the device's MQTT topics, on real
//! sockets: IoT Hub's twin JSON, quoted etags and `If-Match` (412 on a stale one), PATCH merges
//! and PUT replaces, desired changes pushed to a subscribed device, one twin store for both
//! sides, and the updates IoT Hub refuses (reported properties, bodies that are not JSON, bad
//! keys, sections over their size limits), counted.

use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Service};

const DESIRED: &str = "$iothub/twin/PATCH/properties/desired/#";

async fn patch(s: &Service, id: &str, if_match: Option<&str>, body: Value) -> common::Answer {
    let headers: Vec<(&str, &str)> = if_match.map(|e| ("If-Match", e)).into_iter().collect();
    s.call(
        Method::PATCH,
        &format!("/twins/{id}"),
        &headers,
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn twins_read_patch_and_replace_with_etags() {
    let e = common::start_emulators(Clock::real()).await;
    HubRegistry(common::registry(&e))
        .register("tw-1")
        .await
        .unwrap();
    let s = Service::new(&e);

    let got = s.get("/twins/tw-1").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let twin = &got.body;
    assert_eq!(twin["deviceId"], "tw-1");
    assert_eq!(twin["status"], "enabled");
    assert_eq!(twin["connectionState"], "Disconnected");
    assert_eq!(twin["authenticationType"], "certificateAuthority");
    assert_eq!(twin["version"], 1);
    assert_eq!(twin["properties"]["desired"]["$version"], 1);
    assert_eq!(twin["properties"]["reported"]["$version"], 1);
    assert!(twin["statusUpdateTime"].as_str().unwrap().ends_with('Z'));
    let etag = twin["etag"].as_str().unwrap().to_string();
    assert_eq!(got.header("etag"), Some(format!("\"{etag}\"").as_str()));

    let body =
        json!({"tags": {"site": {"room": "1R"}}, "properties": {"desired": {"interval": 5}}});
    let quoted = format!("\"{etag}\"");
    let patched = patch(&s, "tw-1", Some(&quoted), body).await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["tags"]["site"]["room"], "1R");
    assert_eq!(patched.body["properties"]["desired"]["interval"], 5);
    assert_eq!(patched.body["properties"]["desired"]["$version"], 2);
    assert_eq!(patched.body["version"], 2);
    assert_ne!(patched.body["etag"], etag.as_str());

    // The etag read before the change is stale now.
    let stale = patch(&s, "tw-1", Some(&quoted), json!({"tags": {"x": 1}})).await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.header("iothub-errorcode"), Some("PreconditionFailed"));
    assert_eq!(stale.error_code(), Some(412001));
    let any = patch(
        &s,
        "tw-1",
        Some("*"),
        json!({"tags": {"site": {"floor": 2}}}),
    )
    .await;
    assert_eq!(any.status, 200);
    assert_eq!(any.body["tags"]["site"], json!({"room": "1R", "floor": 2}));

    // PUT replaces tags and desired properties as a whole.
    let replacement = json!({"tags": {"owner": "ops"}, "properties": {"desired": {"mode": "eco"}}});
    let put = s
        .call(
            Method::PUT,
            "/twins/tw-1",
            &[("If-Match", "*")],
            Some(&replacement),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["tags"], json!({"owner": "ops"}));
    assert_eq!(put.body["properties"]["desired"]["mode"], "eco");
    assert!(put.body["properties"]["desired"]["interval"].is_null());
    assert_eq!(put.body["properties"]["desired"]["$version"], 3);

    let missing = s.get("/twins/nobody").await;
    assert_eq!((missing.status, missing.error_code()), (404, Some(404001)));
    e.shutdown().await;
}

#[tokio::test]
async fn desired_changes_reach_the_subscribed_device_and_both_sides_share_the_twin() {
    let e = common::start_emulators(Clock::real()).await;
    let mut device = common::online(&e, "tw-push").await;
    device.subscribe(&[DESIRED, "$iothub/twin/res/#"]).await;
    let mut quiet = common::online(&e, "tw-quiet").await;
    let s = Service::new(&e);

    let body = json!({"properties": {"desired": {"telemetryInterval": 5, "fw": {"url": "x"}}}});
    assert_eq!(patch(&s, "tw-push", None, body).await.status, 200);
    let p = device.next_publish().await;
    assert_eq!(p.topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    let pushed: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(
        pushed,
        json!({"telemetryInterval": 5, "fw": {"url": "x"}, "$version": 2})
    );
    // null deletes a member, and the notification says so.
    let body = json!({"properties": {"desired": {"fw": null}}});
    assert_eq!(patch(&s, "tw-push", None, body).await.status, 200);
    let pushed: Value = serde_json::from_slice(&device.next_publish().await.payload).unwrap();
    assert_eq!(pushed, json!({"fw": null, "$version": 3}));
    // Tags are not the device's business.
    assert_eq!(
        patch(&s, "tw-push", None, json!({"tags": {"a": 1}}))
            .await
            .status,
        200
    );
    assert!(
        device
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "no notification for a tags change"
    );

    // The device reads what the service wrote and reports back; the service reads that.
    device.publish("$iothub/twin/GET/?$rid=1", b"").await;
    let doc: Value = serde_json::from_slice(&device.next_publish().await.payload).unwrap();
    assert_eq!(
        doc["desired"],
        json!({"telemetryInterval": 5, "$version": 3})
    );
    let reported = br#"{"telemetryInterval": 5}"#;
    device
        .publish("$iothub/twin/PATCH/properties/reported/?$rid=2", reported)
        .await;
    let ack = device.next_publish().await;
    assert_eq!(ack.topic, "$iothub/twin/res/204/?$rid=2&$version=2");
    let twin = s.get("/twins/tw-push").await.body;
    assert_eq!(twin["properties"]["reported"]["telemetryInterval"], 5);
    assert_eq!(twin["properties"]["reported"]["$version"], 2);
    assert_eq!(twin["connectionState"], "Connected");

    // A device that did not subscribe gets nothing.
    let body = json!({"properties": {"desired": {"x": 1}}});
    assert_eq!(patch(&s, "tw-quiet", None, body).await.status, 200);
    assert!(
        quiet
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(e.hub.stats().desired_pushed, 2);
    e.shutdown().await;
}

#[tokio::test]
async fn updates_iot_hub_refuses_are_answered_and_counted() {
    let e = common::start_emulators(Clock::real()).await;
    HubRegistry(common::registry(&e))
        .register("tw-bad")
        .await
        .unwrap();
    let s = Service::new(&e);

    let not_json = s
        .call_raw(Method::PATCH, "/twins/tw-bad", b"{\"tags\": ")
        .await;
    assert_eq!(
        (not_json.status, not_json.error_code()),
        (400, Some(400006))
    );
    assert_eq!(
        not_json.header("iothub-errorcode"),
        Some("IotHubFormatError")
    );
    let cases = [
        json!({"properties": {"reported": {"fw": "9"}}}),
        json!([1, 2]),
        json!({"tags": "not an object"}),
        json!({"tags": {"a.b": 1}}),
        json!({"properties": {"desired": {"$secret": 1}}}),
    ];
    for body in cases {
        let a = patch(&s, "tw-bad", None, body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
    }
    let big_desired = json!({"properties": {"desired": {"blob": "x".repeat(33 * 1024)}}});
    let big_tags = json!({"tags": {"blob": "x".repeat(9 * 1024)}});
    for body in [big_desired, big_tags] {
        let a = patch(&s, "tw-bad", None, body).await;
        assert_eq!((a.status, a.error_code()), (413, Some(413001)));
        assert_eq!(a.header("iothub-errorcode"), Some("MessageTooLarge"));
    }
    let stats = e.hub.stats();
    assert_eq!((stats.invalid_updates, stats.too_large), (6, 2));
    let twin = s.get("/twins/tw-bad").await.body;
    assert_eq!(twin["version"], 1, "nothing was applied: {twin}");
    e.shutdown().await;
}

#[tokio::test]
async fn reported_patches_iot_hub_refuses_keep_the_session() {
    let e = common::start_emulators(Clock::real()).await;
    let mut device = common::online(&e, "tw-dev").await;
    device.subscribe(&["$iothub/twin/res/#"]).await;
    let path = |rid: u32| format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
    device.publish(&path(1), b"{not json").await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/400/?$rid=1"
    );
    device.publish(&path(2), br#"{"bad key": 1}"#).await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/400/?$rid=2"
    );
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(33 * 1024));
    device.publish(&path(3), big.as_bytes()).await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/413/?$rid=3"
    );
    device.publish(&path(4), br#"{"fw": "2"}"#).await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/204/?$rid=4&$version=2",
        "the session carries on and nothing refused was applied"
    );
    let stats = e.hub.stats();
    assert_eq!(
        (stats.invalid_updates, stats.too_large, stats.twin_updates),
        (2, 1, 1)
    );
    e.shutdown().await;
}
