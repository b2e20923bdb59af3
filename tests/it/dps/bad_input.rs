//! Bad input on DPS's device port and service API: unknown operations, malformed register
//! bodies and requests, packets DPS does not serve, garbage inside and instead of TLS. Each gets
//! DPS's error (a 4xx on the response topic in DPS's error shape) or a closed connection, is
//! counted in the emulator's statistics, and DPS goes on serving well-behaved devices.

use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use serde_json::{Value, json};

use super::support::{
    POLL, REGISTER, RawDps, SCOPE, Service, client, fast_polling, group, register, start,
};
use crate::common;
use fleetsim::emulator::Emulators;
use fleetsim::emulator::dps::DpsLimits;

#[tokio::test]
async fn bad_input_gets_dps_errors_or_a_closed_connection() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "rough").await;
    let (mut raw, _) = RawDps::connect(&e, "rough", &key, &issued, SCOPE).await;
    raw.subscribe().await;

    let unknown = format!("{POLL}&operationId=4.0000000000000000.nope");
    let (topic, body) = raw.request(&unknown, &Value::Null).await;
    assert!(
        topic.starts_with("$dps/registrations/res/404/?$rid="),
        "{topic}"
    );
    for field in ["errorCode", "trackingId", "message", "timestampUtc"] {
        assert!(!body[field].is_null(), "{field} in {body}");
    }
    assert_eq!(body["errorCode"], 404201);
    let (topic, body) = raw.request_raw(REGISTER, b"{not json").await;
    assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
    assert_eq!(body["errorCode"], 400004);
    let other = json!({"registrationId": "somebody-else"});
    let (topic, _) = raw.request(REGISTER, &other).await;
    assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
    // The connection survived all that; a foreign topic ends it.
    let (topic, _) = raw
        .request(REGISTER, &json!({"registrationId": "rough"}))
        .await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    raw.publish("devices/rough/messages/events/", b"{}").await;
    assert!(raw.recv().await.is_none(), "closed after a foreign topic");

    // Garbage inside TLS, then garbage instead of TLS.
    let (mut raw, _) = RawDps::connect(&e, "rough", &key, &issued, SCOPE).await;
    raw.write(&[0xff; 64]).await;
    assert!(raw.recv().await.is_none(), "closed after garbage");
    garbage_instead_of_tls(e.dps.as_ref().unwrap().mqtt_addr, b"GET / HTTP/1.0\r\n\r\n").await;

    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.malformed, 3);
    assert!(stats.protocol_errors >= 3, "{stats:?}");
    // DPS still serves.
    let dps = client(&e, fast_polling(), SCOPE, false);
    assert!(register(&dps, "rough", &key, &issued).await.outcome.is_ok());
    e.shutdown().await;
}

/// Sends `bytes` where a TLS handshake belongs and waits (10 s at most) for DPS to close.
async fn garbage_instead_of_tls(addr: std::net::SocketAddr, bytes: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut rest = Vec::new();
    let read = tcp.read_to_end(&mut rest);
    let _ = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("closed");
}

/// DPS's error body: the fields every DPS error carries.
fn assert_dps_error(body: &Value, code: u64) {
    assert_eq!(body["errorCode"], code, "{body}");
    for field in ["trackingId", "message", "timestampUtc"] {
        assert!(!body[field].is_null(), "{field} in {body}");
    }
}

/// Admits EZCA's devices and returns a subscribed raw connection for `id`.
async fn subscribed(e: &Emulators, id: &str) -> RawDps {
    let ca = common::ezca(e).await;
    let (key, issued) = common::enrol(&ca, id).await;
    let (mut raw, _) = RawDps::connect(e, id, &key, &issued, SCOPE).await;
    raw.subscribe().await;
    raw
}

#[tokio::test]
async fn malformed_requests_get_400s_and_others_operations_404() {
    let e = start(DpsLimits::unlimited()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let mut raw = subscribed(&e, "shaky").await;

    // JSON, but not a register body; no body at all; no registrationId.
    for body in [&b"[1, 2]"[..], br#"{"registrationId": 5}"#, b"", b"{}"] {
        let (topic, answer) = raw.request_raw(REGISTER, body).await;
        assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
        assert_dps_error(&answer, 400004);
    }
    // A poll that names no operation.
    let (topic, answer) = raw.request(POLL, &Value::Null).await;
    assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
    assert_dps_error(&answer, 400004);

    // Another device's real operation is not this device's to read.
    let mut owner = subscribed(&e, "owner").await;
    let (topic, started) = owner
        .request(REGISTER, &json!({"registrationId": "owner"}))
        .await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    let operation = started["operationId"].as_str().expect("operationId");
    let theirs = format!("{POLL}&operationId={operation}");
    let (topic, answer) = raw.request(&theirs, &Value::Null).await;
    assert!(topic.starts_with("$dps/registrations/res/404/"), "{topic}");
    assert_dps_error(&answer, 404201);
    // The owner reads it.
    let (topic, _) = owner.request(&theirs, &Value::Null).await;
    assert!(
        topic.starts_with("$dps/registrations/res/202/")
            || topic.starts_with("$dps/registrations/res/200/"),
        "{topic}"
    );

    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.malformed, 6, "{stats:?}");
    assert_eq!(
        stats.protocol_errors, 0,
        "the connection survived: {stats:?}"
    );
    // Devices that go away mid-registration (no DISCONNECT, no TLS close_notify: a run that
    // ends, a device switched off) sent nothing wrong: not counted as bad input.
    drop((raw, owner));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.protocol_errors, 0, "{stats:?}");
    e.shutdown().await;
}

#[tokio::test]
async fn packets_dps_does_not_serve_close_the_connection() {
    let e = start(DpsLimits::unlimited()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "closer").await;
    let connected = || RawDps::connect(&e, "closer", &key, &issued, SCOPE);

    // An operation DPS does not have, a request without $rid, another subscription, QoS 2.
    let unknown = "$dps/registrations/PUT/iotdps-unregister/?$rid=1";
    let no_rid = "$dps/registrations/PUT/iotdps-register/?other=1";
    for topic in [unknown, no_rid] {
        let (mut raw, _) = connected().await;
        raw.subscribe().await;
        raw.publish(topic, b"{}").await;
        assert!(raw.recv().await.is_none(), "closed after {topic}");
    }
    let (mut raw, _) = connected().await;
    let sub = Subscribe::new("$dps/registrations/#", QoS::AtLeastOnce);
    raw.send(Packet::Subscribe(sub)).await;
    assert!(raw.recv().await.is_none(), "closed after a foreign filter");
    let (mut raw, _) = connected().await;
    let mut exactly_once = Publish::new(format!("{REGISTER}1"), QoS::ExactlyOnce, "{}");
    exactly_once.pkid = 1;
    raw.send(Packet::Publish(exactly_once)).await;
    assert!(raw.recv().await.is_none(), "closed after QoS 2");
    // A session that starts with anything but CONNECT.
    let mut raw = RawDps::tls(&e, &key, &issued).await;
    raw.send(Packet::PingReq).await;
    assert!(raw.recv().await.is_none(), "closed before CONNECT");

    // Garbage instead of TLS on the WebSocket port too.
    let ws = e.dps.as_ref().unwrap().websocket_addr;
    garbage_instead_of_tls(ws, &[0x16, 0x03, 0x01, 0xff, 0xff, 0]).await;

    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.protocol_errors, 6, "{stats:?}");
    assert_eq!(stats.malformed, 0, "{stats:?}");
    let dps = client(&e, fast_polling(), SCOPE, false);
    assert!(
        register(&dps, "closer", &key, &issued)
            .await
            .outcome
            .is_ok()
    );
    e.shutdown().await;
}

#[tokio::test]
async fn the_service_api_answers_bad_requests_in_dps_shape() {
    let e = start(DpsLimits::unlimited()).await;
    let service = Service::new(&e);
    let dps = e.dps.as_ref().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap();
    let url = format!(
        "{}/enrollmentGroups/g?api-version=2021-10-01",
        dps.service_url
    );
    let unsigned = http.put(&url).body("{}").send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let body: Value = unsigned.json().await.unwrap();
    assert!(body["errorCode"].as_u64().is_some(), "{body}");

    let (status, body) = service.put("enrollmentGroups/g", json!([1, 2])).await;
    assert_eq!(status, 400, "{body}");
    assert_dps_error(&body, 400004);
    let mismatched = group(
        "other",
        fleetsim::emulator::EZCA_ROOT_CERTIFICATE,
        "enabled",
    );
    let (status, body) = service.put("enrollmentGroups/g", mismatched).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = service.get("enrollmentGroups/none").await;
    assert_eq!(status, 404, "{body}");
    assert_dps_error(&body, 404201);
    e.shutdown().await;
}
