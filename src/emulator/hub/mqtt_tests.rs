//! The MQTT session over an in-memory stream: a SAS device of a standard and of a basic hub.

use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe};
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

use super::{read_packet, session, write_packet};
use crate::emulator::hub::throttle::HubLimits;
use crate::emulator::hub::{HubConfig, HubEmulator};
use crate::iothub::registry::{AuthenticationType, Device};
use crate::iothub::sas;

const KEY: [u8; 32] = [7; 32];

/// A hub with one SAS device `d1`, and that device's session on it, CONNACK read.
async fn connected(limits: HubLimits) -> (HubEmulator, DuplexStream, BytesMut) {
    connected_with(limits, 60).await
}

/// Like [`connected`], the device asking for `keep_alive` seconds.
async fn connected_with(
    limits: HubLimits,
    keep_alive: u16,
) -> (HubEmulator, DuplexStream, BytesMut) {
    let hub = HubEmulator::new(&HubConfig {
        limits,
        ..HubConfig::default()
    })
    .unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(KEY);
    let mut device = Device::certificate_authority("d1");
    device.authentication.kind = AuthenticationType::Sas;
    device.authentication.symmetric_key.primary_key = Some(key.clone());
    hub.restore_devices(&[device]);

    let (mut client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(session(
        server,
        None,
        hub.state.clone(),
        CancellationToken::new(),
        false,
    ));
    let host = hub.host_name().to_string();
    let password = sas::token(&format!("{host}/devices/d1"), &key, None, u64::MAX / 2).unwrap();
    let mut connect = Connect::new("d1");
    connect.keep_alive = keep_alive;
    connect.set_login(format!("{host}/d1/?api-version=2021-04-12"), password);
    write_packet(&mut client, Packet::Connect(connect))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    match read_packet(&mut client, &mut buf, super::MAX_PACKET)
        .await
        .unwrap()
    {
        Packet::ConnAck(ack) => {
            assert_eq!(ack.code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    (hub, client, buf)
}

async fn next(client: &mut DuplexStream, buf: &mut BytesMut) -> Option<Packet> {
    tokio::time::timeout(
        Duration::from_secs(2),
        read_packet(client, buf, super::MAX_PACKET),
    )
    .await
    .expect("the hub answers or closes within 2 s")
    .ok()
}

#[tokio::test]
async fn a_standard_hub_answers_twin_requests() {
    let (hub, mut client, mut buf) = connected(HubLimits::unlimited()).await;
    let subscribe = Subscribe::new("$iothub/twin/res/#", QoS::AtMostOnce);
    write_packet(&mut client, Packet::Subscribe(subscribe))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut client, &mut buf).await,
        Some(Packet::SubAck(_))
    ));
    let get = Publish::new("$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, Vec::new());
    write_packet(&mut client, Packet::Publish(get))
        .await
        .unwrap();
    match next(&mut client, &mut buf).await {
        Some(Packet::Publish(p)) => {
            assert!(p.topic.starts_with("$iothub/twin/res/200/"), "{}", p.topic)
        }
        other => panic!("expected the twin, got {other:?}"),
    }
    assert!(hub.is_connected("d1"));
}

#[tokio::test]
async fn a_basic_hub_closes_the_connection_on_twin_topics() {
    let basic = HubLimits {
        cloud_to_device: false,
        ..HubLimits::unlimited()
    };
    let (hub, mut client, mut buf) = connected(basic).await;
    let subscribe = Subscribe::new("$iothub/twin/res/#", QoS::AtMostOnce);
    write_packet(&mut client, Packet::Subscribe(subscribe))
        .await
        .unwrap();
    assert!(
        next(&mut client, &mut buf).await.is_none(),
        "closed without SUBACK"
    );

    let (_, mut client, mut buf) = connected(basic).await;
    let mut get = Publish::new("$iothub/twin/GET/?$rid=1", QoS::AtLeastOnce, Vec::new());
    get.pkid = 1;
    write_packet(&mut client, Packet::Publish(get))
        .await
        .unwrap();
    assert!(
        next(&mut client, &mut buf).await.is_none(),
        "closed without PUBACK"
    );
    // Telemetry is what a basic hub is for.
    let (_, mut client, mut buf) = connected(basic).await;
    let mut telemetry = Publish::new(
        "devices/d1/messages/events/",
        QoS::AtLeastOnce,
        b"{}".to_vec(),
    );
    telemetry.pkid = 1;
    write_packet(&mut client, Packet::Publish(telemetry))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut client, &mut buf).await,
        Some(Packet::PubAck(_))
    ));
    assert_eq!(hub.stats().drops, 1);
}

#[tokio::test(start_paused = true)]
async fn a_session_without_keep_alive_still_ends_when_silent() {
    let (_hub, mut client, mut buf) = connected_with(HubLimits::unlimited(), 0).await;
    // Silent for almost IoT Hub's 1767 s cap: still open.
    let almost = Duration::from_secs(1760);
    let read = read_packet(&mut client, &mut buf, 1024);
    assert!(tokio::time::timeout(almost, read).await.is_err());
    // Past it: closed.
    match tokio::time::timeout(
        Duration::from_secs(20),
        read_packet(&mut client, &mut buf, 1024),
    )
    .await
    {
        Ok(Err(_)) => {}
        other => panic!("a silent session with keep-alive 0 was not closed: {other:?}"),
    }
}
