//! What the hub emulator does with a connected device's packets: telemetry is counted and acked,
//! and the violations IoT Hub answers by closing the connection (QoS 2, another device's or an
//! unknown topic, over 256 KB, too many or foreign subscriptions, silence past 1.5 × keep-alive)
//! close it here too.

use crate::common;

use std::time::{Duration, Instant};

use common::RawMqtt;
use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::emulator::Emulators;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter};

async fn online(e: &Emulators, id: &str, keep_alive: u16) -> RawMqtt {
    let ca = common::ezca(e).await;
    HubRegistry(common::registry(e)).register(id).await.unwrap();
    let (key, issued) = common::enrol(&ca, id).await;
    let (client, code) = RawMqtt::connect(e, id, &issued, &key, keep_alive).await;
    assert_eq!(code, ConnectReturnCode::Success);
    client
}

fn publish(topic: &str, qos: QoS, payload: Vec<u8>) -> Packet {
    let mut p = Publish::new(topic, qos, payload);
    p.pkid = if qos == QoS::AtMostOnce { 0 } else { 7 };
    Packet::Publish(p)
}

#[tokio::test]
async fn telemetry_is_counted_and_qos1_acked() {
    let e = common::start_emulators(Clock::real()).await;
    let mut c = online(&e, "t1", 60).await;
    c.send(publish(
        "devices/t1/messages/events/%24.ct=application%2Fjson&alert=true",
        QoS::AtLeastOnce,
        b"{\"a\":1}".to_vec(),
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(a)) if a.pkid == 7));
    c.send(publish(
        "devices/t1/messages/events/",
        QoS::AtMostOnce,
        b"12345".to_vec(),
    ))
    .await;
    c.send(Packet::PingReq).await;
    assert!(
        matches!(c.recv().await, Some(Packet::PingResp)),
        "QoS 0 gets no PUBACK; the ping answers next"
    );
    let stats = e.hub.device_stats("t1");
    assert_eq!((stats.messages, stats.bytes), (2, 12));
    e.shutdown().await;
}

#[tokio::test]
async fn violations_close_the_connection() {
    let e = common::start_emulators(Clock::real()).await;
    let cases: Vec<(&str, Packet)> = vec![
        (
            "qos2",
            publish(
                "devices/qos2/messages/events/",
                QoS::ExactlyOnce,
                b"x".to_vec(),
            ),
        ),
        (
            "foreign",
            publish(
                "devices/someone-else/messages/events/",
                QoS::AtLeastOnce,
                b"x".to_vec(),
            ),
        ),
        (
            "unknown",
            publish("weather/today", QoS::AtLeastOnce, b"x".to_vec()),
        ),
        (
            "oversize",
            publish(
                "devices/oversize/messages/events/",
                QoS::AtLeastOnce,
                vec![b'x'; 262_144 + 8192],
            ),
        ),
        (
            "badsub",
            Packet::Subscribe(Subscribe::new(
                "devices/someone-else/messages/devicebound/#",
                QoS::AtLeastOnce,
            )),
        ),
    ];
    for (id, packet) in cases {
        let mut c = online(&e, id, 60).await;
        c.send(packet).await;
        assert_eq!(c.recv().await, None, "{id}: the hub closes the connection");
        assert_eq!(e.hub.device_stats(id).messages, 0, "{id}: nothing counted");
        assert_eq!(e.hub.device_stats(id).drops, 1, "{id}: counted as a drop");
    }
    e.shutdown().await;
}

#[tokio::test]
async fn at_most_five_subscriptions() {
    let e = common::start_emulators(Clock::real()).await;
    let mut c = online(&e, "subs", 60).await;
    let allowed = [
        "devices/subs/messages/devicebound/#",
        "$iothub/twin/res/#",
        "$iothub/methods/POST/#",
        "$iothub/twin/PATCH/properties/desired/#",
    ];
    let filters: Vec<_> = allowed
        .iter()
        .map(|f| SubscribeFilter::new(f.to_string(), QoS::ExactlyOnce))
        .collect();
    let mut sub = Subscribe::new_many(filters);
    sub.pkid = 1;
    c.send(Packet::Subscribe(sub)).await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.return_codes.len(), 4);
            // QoS 2 is granted as 1.
            assert!(
                ack.return_codes.iter().all(|r| *r
                    == rumqttc::mqttbytes::v4::SubscribeReasonCode::Success(QoS::AtLeastOnce))
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut more = Subscribe::new_many(vec![
        SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtLeastOnce),
        SubscribeFilter::new("$iothub/methods/POST/#".into(), QoS::AtLeastOnce),
    ]);
    more.pkid = 2;
    c.send(Packet::Subscribe(more)).await;
    assert_eq!(
        c.recv().await,
        None,
        "a sixth subscription closes the connection"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn silence_past_one_and_a_half_keep_alives_closes() {
    let e = common::start_emulators(Clock::real()).await;
    let mut c = online(&e, "quiet", 1).await;
    let t = Instant::now();
    assert_eq!(c.recv().await, None);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn twin_get_and_reported_patch_answer_on_the_response_topic() {
    let e = common::start_emulators(Clock::real()).await;
    let mut c = online(&e, "twin", 60).await;
    let mut sub = Subscribe::new("$iothub/twin/res/#", QoS::AtMostOnce);
    sub.pkid = 1;
    c.send(Packet::Subscribe(sub)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));

    c.send(publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=41",
        QoS::AtMostOnce,
        br#"{"firmware":"2.1"}"#.to_vec(),
    ))
    .await;
    match c.recv().await {
        // A new twin's reported properties are at version 1; the first patch makes them 2.
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "$iothub/twin/res/204/?$rid=41&$version=2"),
        other => panic!("expected the PATCH response, got {other:?}"),
    }
    c.send(publish(
        "$iothub/twin/GET/?$rid=42",
        QoS::AtMostOnce,
        Vec::new(),
    ))
    .await;
    match c.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "$iothub/twin/res/200/?$rid=42");
            let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!(doc["reported"]["firmware"], "2.1");
            assert_eq!(doc["reported"]["$version"], 2);
        }
        other => panic!("expected the GET response, got {other:?}"),
    }
    assert_eq!(e.hub.twin("twin").unwrap().reported["firmware"], "2.1");
    assert_eq!(
        e.hub.device_stats("twin").messages,
        0,
        "twin traffic is not telemetry"
    );
    e.shutdown().await;
}
