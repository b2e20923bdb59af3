//! fleetsim's own MQTT session (`fleet.transport_impl: lean`): against the hub emulator it
//! publishes (QoS 0 and 1), subscribes and hears the hub's answers over TLS and WebSocket, and a
//! whole fleet runs on it with renewals; against a scripted server it pings as IoT Hub expects
//! and gives up on a silent one, and every malformed or unexpected packet from the hub side
//! (truncated, oversize, malformed, an ack for an id it never sent, a packet type a hub never
//! sends a device) ends that session with a counted protocol error, never a panic.
//!
//! The other transport tests run on the lean session with `FLEETSIM_TRANSPORT_IMPL=lean`
//! (see `common::lean_requested`).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::emulator::amqp::c2d::Ack;
use fleetsim::emulator::amqp::{C2dMessage, C2dSink};
use fleetsim::fleet::{self, RunOptions};
use fleetsim::iothub::HubError;
use fleetsim::iothub::mqtt::{Incoming, MqttEndpoint, MqttSession, MqttTransport};
use fleetsim::iothub::topics::{self, Subscription};
use rcgen::{CertificateParams, DnType, KeyPair};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck, Publish, Subscribe};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::common::{self, BrokerSession, ScriptedBroker};

#[tokio::test]
async fn a_lean_session_publishes_subscribes_and_hears_the_hub_over_tls_and_websocket() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    for (id, websocket) in [("lean-tls", false), ("lean-ws", true)] {
        HubRegistry(common::registry(&e))
            .register(id)
            .await
            .unwrap();
        let (key, issued) = common::enrol(&ca, id).await;
        let mut transport = common::transport_over(&e, websocket);
        transport.use_lean(true);
        let mut s = transport
            .connect(id, issued.chain.clone(), key.private_key_der())
            .await
            .expect("connects");
        assert!(matches!(s, MqttSession::Lean(_)));
        let events = format!("devices/{id}/messages/events/");
        for i in 0..3 {
            let body = format!("{{\"n\":{i}}}").into_bytes();
            s.publish(events.clone(), body, true).await.expect("acked");
        }
        s.publish(events.clone(), b"{}".to_vec(), false)
            .await
            .unwrap();
        let filters = [Subscription::Twin, Subscription::Methods, Subscription::C2d]
            .map(|s| (s.filter(id), s.at_least_once()))
            .to_vec();
        s.subscribe(filters).await.expect("granted");
        s.publish(topics::twin_get(7), Vec::new(), false)
            .await
            .unwrap();
        let twin = next_message(&mut s).await;
        assert!(twin.starts_with("$iothub/twin/res/200/"), "{twin}");
        // A cloud-to-device message comes at QoS 1: the session acknowledges it.
        let completed_before = e.hub.stats().c2d_completed;
        e.c2d.enqueue(c2d(id)).unwrap();
        let c2d = next_message(&mut s).await;
        assert!(
            c2d.starts_with(&format!("devices/{id}/messages/devicebound/")),
            "{c2d}"
        );
        let completed = async {
            while e.hub.stats().c2d_completed < completed_before + 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), completed)
            .await
            .expect("the PUBACK completes the message");
        s.disconnect().await;
        let stats = e.hub.device_stats(id);
        assert_eq!(stats.messages, 4, "{id}: 3 at QoS 1 and 1 at QoS 0");
        assert_eq!(stats.websocket_connects, u64::from(websocket), "{id}");
        assert_eq!(transport.protocol_errors(), 0);
    }
    e.shutdown().await;
}

/// The topic of the next message the hub sends `s`.
async fn next_message(s: &mut MqttSession) -> String {
    match tokio::time::timeout(Duration::from_secs(10), s.incoming()).await {
        Ok(Incoming::Message(m)) => m.topic,
        Ok(Incoming::Closed(why)) => panic!("closed: {why}"),
        Err(_) => panic!("no message from the hub"),
    }
}

fn c2d(device: &str) -> C2dMessage {
    C2dMessage {
        device_id: device.into(),
        message_id: Some("m1".into()),
        correlation_id: None,
        user_id: None,
        content_type: None,
        content_encoding: None,
        expiry_ms: None,
        ack: Ack::None,
        properties: Vec::new(),
        body: bytes::Bytes::from_static(b"{}"),
    }
}

#[tokio::test]
async fn a_lean_session_is_refused_as_the_rumqttc_one_is() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    HubRegistry(common::registry(&e))
        .register("lean-a")
        .await
        .unwrap();
    let (key, issued) = common::enrol(&ca, "lean-a").await;
    let mut transport = common::transport(&e);
    transport.use_lean(true);
    // lean-a's certificate cannot act as lean-b.
    match transport
        .connect("lean-b", issued.chain.clone(), key.private_key_der())
        .await
    {
        Err(HubError::ConnectRefused(code)) => assert_eq!(code, "5"),
        other => panic!("expected CONNACK 5, got {:?}", other.err()),
    }
    e.shutdown().await;
}

/// A device certificate for the scripted broker (which takes any).
fn identity(cn: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![cn.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (vec![cert.der().clone()], der)
}

/// A lean transport to `broker`, with `keep_alive`.
fn lean_to(broker: &ScriptedBroker, keep_alive: Duration) -> MqttTransport {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(broker.root.clone()).unwrap();
    let addr = broker.addr();
    let mut transport = MqttTransport::new(
        MqttEndpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            hub_host: common::HUB_HOST.into(),
            keep_alive,
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            websocket: false,
        },
        roots,
    );
    transport.use_lean(true);
    transport
}

/// A lean session connected to a fresh scripted broker, and the broker's side of it.
async fn connected(keep_alive: Duration) -> (MqttTransport, MqttSession, BrokerSession) {
    let broker = ScriptedBroker::start().await;
    let transport = lean_to(&broker, keep_alive);
    let (chain, key) = identity("lean-dev");
    let (session, server) =
        tokio::join!(transport.connect("lean-dev", chain, key), broker.accept());
    (transport, session.expect("connects"), server)
}

fn encoded(packet: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.write(&mut out, 1 << 20).unwrap();
    out.to_vec()
}

/// What the hub side sends in each case, while the device waits for a message.
fn bad_packets() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut qos2 = Publish::new(
        "devices/lean-dev/messages/devicebound/",
        QoS::ExactlyOnce,
        b"x".to_vec(),
    );
    qos2.pkid = 3;
    vec![
        // A PUBLISH announcing 100 bytes, 10 sent, then the stream ends.
        (
            "truncated",
            vec![0x30, 100, 0, 3, b'a', b'/', b'b', 1, 2, 3],
            true,
        ),
        // A PUBLISH announcing 300 KiB: refused on its header, before any is buffered.
        ("oversize", vec![0x30, 0x80, 0xE0, 0x12], false),
        // A topic length of 50 in a packet of 4 bytes.
        ("malformed", vec![0x30, 4, 0, 50, b'a', b'b'], false),
        (
            "unexpected PUBACK",
            encoded(Packet::PubAck(PubAck::new(41))),
            false,
        ),
        (
            "SUBSCRIBE",
            encoded(Packet::Subscribe(Subscribe::new("x", QoS::AtMostOnce))),
            false,
        ),
        (
            "second CONNACK",
            encoded(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false,
            ))),
            false,
        ),
        ("QoS 2", encoded(Packet::Publish(qos2)), false),
    ]
}

#[tokio::test]
async fn malformed_or_unexpected_packets_end_the_session_with_a_counted_error() {
    for (case, bytes, then_close) in bad_packets() {
        let (transport, mut session, mut server) = connected(Duration::from_secs(30)).await;
        server.send_raw(&bytes).await;
        if then_close {
            server.close().await;
        }
        let heard = tokio::time::timeout(Duration::from_secs(10), session.incoming())
            .await
            .unwrap_or_else(|_| panic!("{case}: the session kept waiting"));
        match heard {
            Incoming::Closed(why) => assert!(why.contains("protocol violation"), "{case}: {why}"),
            Incoming::Message(m) => panic!("{case}: passed on {m:?}"),
        }
        assert_eq!(transport.protocol_errors(), 1, "{case}");
        // The session stays ended: the device's next publish fails at once, and reconnects.
        let again = session
            .publish(
                "devices/lean-dev/messages/events/".into(),
                b"{}".to_vec(),
                true,
            )
            .await;
        assert!(
            matches!(again, Err(HubError::Closed(_))),
            "{case}: {again:?}"
        );
    }
}

#[tokio::test]
async fn a_puback_for_another_id_fails_the_publish_waiting_for_its_own() {
    let (transport, mut session, mut server) = connected(Duration::from_secs(30)).await;
    let topic = "devices/lean-dev/messages/events/".to_string();
    let device = tokio::spawn(async move {
        let r = session.publish(topic, b"{}".to_vec(), true).await;
        (r, session)
    });
    let publish = match server.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_ne!(publish.pkid, 0, "MQTT forbids packet id 0");
    server
        .send(Packet::PubAck(PubAck::new(publish.pkid.wrapping_add(1))))
        .await;
    let (result, _session) = device.await.unwrap();
    match result {
        Err(e @ HubError::Protocol(_)) => assert_eq!(e.kind(), "protocol"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_eq!(transport.protocol_errors(), 1);
}

#[tokio::test]
async fn a_lean_session_pings_within_its_keep_alive_and_gives_up_on_a_silent_hub() {
    let (transport, mut session, mut server) = connected(Duration::from_secs(1)).await;
    let started = Instant::now();
    let device = tokio::spawn(async move { session.incoming().await });
    // Nothing else to send: PINGREQ once the keep-alive has passed, answered once.
    assert!(matches!(server.recv().await, Some(Packet::PingReq)));
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(900) && first < Duration::from_secs(3),
        "{first:?}"
    );
    server.send(Packet::PingResp).await;
    assert!(matches!(server.recv().await, Some(Packet::PingReq)));
    // The second goes unanswered: the session ends at the next keep-alive.
    let heard = tokio::time::timeout(Duration::from_secs(5), device)
        .await
        .expect("the session gives up")
        .unwrap();
    match heard {
        Incoming::Closed(why) => assert!(why.contains("PINGRESP"), "{why}"),
        Incoming::Message(m) => panic!("{m:?}"),
    }
    assert_eq!(transport.protocol_errors(), 0, "silence is not a violation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_on_lean_sessions_with_renewals_over_tls_and_websocket() {
    for transport in ["mqtt", "websocket"] {
        let text = format!(
            "name: lean\nduration: 6s\ntime_scale: 1s\ntarget:\n  embedded: {{}}\nfleet:\n  \
             devices: 20\n  arrival_rate: 20/s\n  transport: {transport}\n  transport_impl: lean\n\
             certificate:\n  validity_days: 4\n  renew_at: 50%\ntelemetry:\n  interval: 1s\n"
        );
        let scenario = common::scenario(&text, "lean.yaml");
        let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
            .await
            .unwrap();
        let hub = outcome.hub.unwrap();
        for d in &outcome.devices {
            assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
            assert!(d.renewals >= 1 && d.messages_acked >= 3, "{d:?}");
            let stats = hub.device_stats(&d.id);
            assert_eq!(stats.messages, d.messages_acked, "{}", d.id);
            assert!(stats.connects >= 2, "{}: {stats:?}", d.id);
        }
        let r = &outcome.report;
        assert_eq!(r.total_errors(), 0, "{transport}: {:?}", r.errors);
    }
}
