//! The hub emulator delivering cloud-to-device messages over MQTT, as IoT Hub does: QoS 1 on the
//! device's devicebound topic with the property bag, in order, each completed by its PUBACK, the
//! per-device queue limit and the size limit, expiry, CleanSession 0 (queued messages flow on
//! reconnect, before any SUBSCRIBE) and 1 (the queue is purged), redelivery after a connection
//! lost before the PUBACK (or taken over by a newer one), the SKU's C2D throttle; and fleetsim's
//! device taking them (properties decoded, `c2d.delivery` timed from `fleetsim-sent-at`, the
//! application's reject/abandon share counted).
//!
//! Messages enter through the queues' `C2dSink::enqueue`, the call the AMQP endpoint makes for
//! every send (its AMQP answers to each refusal are tested in `amqp`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::{HubBackends, HubRegistry};
use fleetsim::device::c2d::{Received, SENT_AT_PROPERTY};
use fleetsim::device::{DeviceSession, DeviceTransport, Incoming, Issued, Services, run_device};
use fleetsim::emulator::amqp::c2d::{Ack, C2dRefusal, FeedbackStatus, now_ms};
use fleetsim::emulator::amqp::{C2dMessage, C2dSink};
use fleetsim::emulator::hub::throttle::HubLimits;
use fleetsim::emulator::{Emulators, HubConfig};
use fleetsim::iothub::quotas::Sku;
use fleetsim::iothub::topics::{self, CloudMessage};
use fleetsim::metrics::{Outcome, Phase, Recorder};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe, SubscribeFilter};
use tokio_util::sync::CancellationToken;

use crate::common::{self, RawMqtt};

/// A message for `device` with id `id`, a correlation id, content type and encoding, and
/// application properties (one without a value, one that needs escaping).
fn message(device: &str, id: &str, ack: Ack) -> C2dMessage {
    C2dMessage {
        device_id: device.into(),
        message_id: Some(id.into()),
        correlation_id: Some(format!("corr/{id}")),
        user_id: None,
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        expiry_ms: None,
        ack,
        properties: vec![
            ("colour".into(), Some("blue & green".into())),
            ("urgent".into(), None),
        ],
        body: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
    }
}

/// A device registered and enrolled, not connected.
struct Enrolled {
    id: String,
    issued: Issued,
    key: fleetsim::crypto::DeviceKey,
}

async fn enrolled(e: &Emulators, id: &str) -> Enrolled {
    let ca = common::ezca(e).await;
    HubRegistry(common::registry(e)).register(id).await.unwrap();
    let (key, issued) = common::enrol(&ca, id).await;
    Enrolled {
        id: id.into(),
        issued,
        key,
    }
}

impl Enrolled {
    async fn connect(&self, e: &Emulators, clean_session: bool) -> RawMqtt {
        let identity = Some((self.issued.chain.clone(), self.key.private_key_der()));
        let (c, code) =
            RawMqtt::connect_session(e, &self.id, identity, "", 60, clean_session).await;
        assert_eq!(code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
        c
    }

    /// Subscribes to the devicebound filter at QoS 1; returns what came after the SUBACK
    /// within a moment (a first message, if one was queued).
    async fn subscribe(&self, c: &mut RawMqtt) -> Option<Publish> {
        let filter = SubscribeFilter::new(
            format!("devices/{}/messages/devicebound/#", self.id),
            QoS::AtLeastOnce,
        );
        let mut sub = Subscribe::new_many([filter]);
        sub.pkid = 1;
        c.send(Packet::Subscribe(sub)).await;
        assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
        publish_within(c, Duration::from_millis(300)).await
    }
}

/// The next PUBLISH within `limit`, if any (`None` also when nothing came).
async fn publish_within(c: &mut RawMqtt, limit: Duration) -> Option<Publish> {
    match c.recv_within(limit).await {
        Some(Some(Packet::Publish(p))) => Some(p),
        Some(other) => panic!("expected a PUBLISH or nothing, got {other:?}"),
        None => None,
    }
}

async fn puback(c: &mut RawMqtt, p: &Publish) {
    c.send(Packet::PubAck(PubAck::new(p.pkid))).await;
}

/// The `$.mid` of a delivered message, read the way a fleetsim device reads it.
fn message_id(p: &Publish, device: &str) -> String {
    let Some(CloudMessage::C2d { properties }) = topics::parse_cloud_message(&p.topic, device)
    else {
        panic!("not a C2D topic: {}", p.topic)
    };
    Received::from_properties(properties).message_id.unwrap()
}

#[tokio::test]
async fn messages_go_out_at_qos_1_in_order_each_completed_by_its_own_puback() {
    let e = common::start_emulators(Clock::real()).await;
    let d = enrolled(&e, "c2d-order").await;
    for id in ["m1", "m2", "m3"] {
        e.c2d.enqueue(message(&d.id, id, Ack::Positive)).unwrap();
    }
    let mut c = d.connect(&e, false).await;
    let first = d.subscribe(&mut c).await.expect("m1 after the SUBACK");
    assert_eq!(first.qos, QoS::AtLeastOnce);
    assert!(!first.dup);
    assert_eq!(
        first.topic,
        "devices/c2d-order/messages/devicebound/%24.mid=m1&%24.cid=corr%2Fm1\
         &%24.to=%2Fdevices%2Fc2d-order%2Fmessages%2Fdevicebound&%24.ct=application%2Fjson\
         &%24.ce=utf-8&iothub-ack=positive&colour=blue%20%26%20green&urgent"
    );
    assert_eq!(&first.payload[..], b"{\"id\":\"m1\"}");
    let Some(CloudMessage::C2d { properties }) = topics::parse_cloud_message(&first.topic, &d.id)
    else {
        panic!("a C2D message")
    };
    let received = Received::from_properties(properties);
    assert_eq!(received.correlation_id.as_deref(), Some("corr/m1"));
    assert_eq!(received.property("colour"), Some(Some("blue & green")));
    assert_eq!(received.property("urgent"), Some(None));

    // The rest follow without waiting for the first PUBACK, in order, each its own packet id.
    let mut out = vec![first];
    for _ in 0..2 {
        out.push(
            publish_within(&mut c, Duration::from_secs(5))
                .await
                .expect("the next message"),
        );
    }
    let ids: Vec<String> = out.iter().map(|p| message_id(p, &d.id)).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    assert!(out[0].pkid != out[1].pkid && out[1].pkid != out[2].pkid);
    assert_eq!(e.c2d.pending(&d.id), 3, "none completed yet");

    // A PUBACK for a packet id the hub never used changes nothing; each real one completes its
    // own message, whatever the order.
    c.send(Packet::PubAck(PubAck::new(out[2].pkid.wrapping_add(100))))
        .await;
    sync(&mut c).await;
    assert_eq!(e.c2d.pending(&d.id), 3);
    puback(&mut c, &out[1]).await;
    sync(&mut c).await;
    assert_eq!(e.c2d.pending(&d.id), 2);
    puback(&mut c, &out[0]).await;
    puback(&mut c, &out[2]).await;
    sync(&mut c).await;
    assert_eq!(e.c2d.pending(&d.id), 0);

    // A message sent while the device is connected flows at once.
    e.c2d.enqueue(message(&d.id, "m4", Ack::None)).unwrap();
    let p = publish_within(&mut c, Duration::from_secs(5))
        .await
        .expect("m4");
    assert_eq!(message_id(&p, &d.id), "m4");
    puback(&mut c, &p).await;
    sync(&mut c).await;

    let feedback: Vec<_> = e
        .c2d
        .drain_feedback()
        .into_iter()
        .map(|f| (f.original_message_id.unwrap(), f.status))
        .collect();
    let positive = |id: &str| (id.to_string(), FeedbackStatus::Success);
    assert_eq!(feedback, [positive("m2"), positive("m1"), positive("m3")]);
    let stats = e.hub.stats();
    assert_eq!((stats.c2d_enqueued, stats.c2d_completed), (4, 4));
    e.shutdown().await;
}

/// Waits (5 s at most) until the hub no longer counts `id` as connected.
async fn gone(e: &Emulators, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while e.hub.is_connected(id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} still connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the hub has handled everything sent so far: a PINGREQ's answer comes after it
/// (PUBLISHes arriving meanwhile are skipped).
async fn sync(c: &mut RawMqtt) {
    c.send(Packet::PingReq).await;
    loop {
        match c.recv().await {
            Some(Packet::PingResp) => return,
            Some(Packet::Publish(_)) => continue,
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_51st_message_is_refused_until_the_device_completes_one() {
    let e = common::start_emulators(Clock::real()).await;
    let d = enrolled(&e, "c2d-full").await;
    for i in 0..50 {
        e.c2d
            .enqueue(message(&d.id, &format!("m{i}"), Ack::None))
            .unwrap();
    }
    let refused = e.c2d.enqueue(message(&d.id, "m50", Ack::None));
    assert_eq!(refused, Err(C2dRefusal::QueueFull(d.id.clone())));
    let refusal = refused.unwrap_err();
    assert_eq!(refusal.condition(), "amqp:resource-limit-exceeded");
    assert!(
        refusal
            .description()
            .starts_with("DeviceMaximumQueueDepthExceeded (403004)")
    );
    let mut big = message(&d.id, "big", Ack::None);
    big.body = Bytes::from(vec![b'x'; 64 * 1024]);
    let refused = e.c2d.enqueue(big).unwrap_err();
    assert!(matches!(refused, C2dRefusal::TooLarge(_)), "{refused:?}");
    assert_eq!(refused.condition(), "amqp:link:message-size-exceeded");

    let mut c = d.connect(&e, false).await;
    let first = d.subscribe(&mut c).await.expect("m0");
    sync(&mut c).await;
    // Delivered but not acknowledged: they still count against the limit.
    assert!(e.c2d.enqueue(message(&d.id, "m50", Ack::None)).is_err());
    puback(&mut c, &first).await;
    sync(&mut c).await;
    assert!(e.c2d.enqueue(message(&d.id, "m50", Ack::None)).is_ok());
    let stats = e.hub.stats();
    assert_eq!((stats.c2d_queue_full, stats.c2d_enqueued), (2, 51));
    e.shutdown().await;
}

#[tokio::test]
async fn expired_messages_are_dropped_with_feedback_and_never_delivered() {
    let e = common::start_emulators(Clock::real()).await;
    let d = enrolled(&e, "c2d-expiry").await;
    let mut short = message(&d.id, "short", Ack::Full);
    short.expiry_ms = Some(now_ms() + 200);
    e.c2d.enqueue(short).unwrap();
    let mut long = message(&d.id, "long", Ack::Full);
    long.expiry_ms = Some(now_ms() + 600_000);
    e.c2d.enqueue(long).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    let mut c = d.connect(&e, false).await;
    let p = d.subscribe(&mut c).await.expect("the live message");
    assert_eq!(message_id(&p, &d.id), "long");
    assert!(
        p.topic.contains("&%24.exp=20"),
        "the expiry goes with it: {}",
        p.topic
    );
    puback(&mut c, &p).await;
    assert!(
        publish_within(&mut c, Duration::from_millis(300))
            .await
            .is_none()
    );
    let feedback: Vec<_> = e
        .c2d
        .drain_feedback()
        .into_iter()
        .map(|f| (f.original_message_id.unwrap(), f.status))
        .collect();
    assert_eq!(
        feedback,
        [
            ("short".to_string(), FeedbackStatus::Expired),
            ("long".to_string(), FeedbackStatus::Success)
        ]
    );
    assert_eq!(e.hub.stats().c2d_expired, 1);
    e.shutdown().await;
}

#[tokio::test]
async fn clean_session_0_gets_queued_messages_on_reconnect_and_1_purges_them() {
    let e = common::start_emulators(Clock::real()).await;
    let d = enrolled(&e, "c2d-session").await;
    let mut c = d.connect(&e, false).await;
    assert!(d.subscribe(&mut c).await.is_none());
    c.send(Packet::Disconnect).await;
    drop(c);
    gone(&e, &d.id).await;
    for id in ["offline-1", "offline-2"] {
        e.c2d.enqueue(message(&d.id, id, Ack::Full)).unwrap();
    }

    // CleanSession 0: the subscription outlived the connection; no SUBSCRIBE needed.
    let mut c = d.connect(&e, false).await;
    let p = publish_within(&mut c, Duration::from_secs(5))
        .await
        .expect("the first queued message on reconnect");
    assert_eq!(message_id(&p, &d.id), "offline-1");
    puback(&mut c, &p).await;
    let p = publish_within(&mut c, Duration::from_secs(5))
        .await
        .expect("then the second");
    assert_eq!(message_id(&p, &d.id), "offline-2");
    sync(&mut c).await;
    // Gone before acknowledging the second; two more arrive while the device is away.
    c.send(Packet::Disconnect).await;
    drop(c);
    gone(&e, &d.id).await;
    for id in ["offline-3", "offline-4"] {
        e.c2d.enqueue(message(&d.id, id, Ack::Full)).unwrap();
    }
    assert_eq!(e.c2d.pending(&d.id), 3);

    // CleanSession 1: everything queued is dropped, and the subscription with it.
    let mut c = d.connect(&e, true).await;
    assert!(
        publish_within(&mut c, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(e.c2d.pending(&d.id), 0);
    e.c2d.enqueue(message(&d.id, "after", Ack::None)).unwrap();
    assert!(
        publish_within(&mut c, Duration::from_millis(300))
            .await
            .is_none(),
        "not subscribed on this session"
    );
    let p = d.subscribe(&mut c).await.expect("after subscribing");
    assert_eq!(message_id(&p, &d.id), "after");

    let statuses: Vec<_> = e
        .c2d
        .drain_feedback()
        .into_iter()
        .map(|f| f.status)
        .collect();
    use FeedbackStatus::{Purged, Success};
    assert_eq!(statuses, [Success, Purged, Purged, Purged]);
    assert_eq!(e.hub.stats().c2d_purged, 3);
    e.shutdown().await;
}

#[tokio::test]
async fn a_message_not_acknowledged_is_delivered_again_on_the_next_connection() {
    let e = common::start_emulators(Clock::real()).await;
    let d = enrolled(&e, "c2d-redeliver").await;
    e.c2d.enqueue(message(&d.id, "again", Ack::None)).unwrap();
    let mut c = d.connect(&e, false).await;
    let p = d.subscribe(&mut c).await.expect("first delivery");
    assert_eq!(message_id(&p, &d.id), "again");
    assert!(!p.dup);
    // The connection breaks before the PUBACK (no DISCONNECT).
    drop(c);

    let mut c = d.connect(&e, false).await;
    let p = publish_within(&mut c, Duration::from_secs(5))
        .await
        .expect("redelivered");
    assert_eq!(message_id(&p, &d.id), "again");
    assert!(p.dup, "a redelivery carries DUP");

    // A newer connection takes over while this one holds the message unacknowledged: the
    // message goes to the newer one once the hub has dropped the older.
    let mut newer = d.connect(&e, false).await;
    let p = publish_within(&mut newer, Duration::from_secs(5))
        .await
        .expect("delivered to the newer connection");
    assert_eq!(message_id(&p, &d.id), "again");
    assert_eq!(c.recv().await, None, "the older connection was dropped");
    puback(&mut newer, &p).await;
    newer.send(Packet::PingReq).await;
    assert!(matches!(newer.recv().await, Some(Packet::PingResp)));
    assert_eq!(e.c2d.pending(&d.id), 0);
    let stats = e.hub.stats();
    assert_eq!((stats.c2d_deliveries, stats.c2d_completed), (3, 1));
    e.shutdown().await;
}

#[tokio::test]
async fn the_c2d_throttle_is_the_skus() {
    // S1 with one unit: 100 sends a minute, a minute's worth at once.
    let hub = HubConfig {
        limits: HubLimits::for_sku(Sku::S1, 1, Duration::from_millis(500)),
        ..Default::default()
    };
    let e = common::start_emulators_with(Clock::real(), hub).await;
    let devices: Vec<String> = (0..3).map(|i| format!("c2d-throttle-{i}")).collect();
    // Registered directly: the registry's own S1 throttle would slow a REST registration.
    let registered: Vec<_> = devices
        .iter()
        .map(|id| fleetsim::iothub::identity::Device::certificate_authority(id))
        .collect();
    e.hub.restore_devices(&registered);
    for i in 0..100 {
        let device = &devices[i % 3];
        let sent = e.c2d.enqueue(message(device, &format!("m{i}"), Ack::None));
        assert!(sent.is_ok(), "send {i}: {sent:?}");
    }
    let refused = e
        .c2d
        .enqueue(message(&devices[0], "m100", Ack::None))
        .unwrap_err();
    assert_eq!(refused, C2dRefusal::Throttled);
    assert_eq!(
        refused.condition(),
        "com.microsoft:device-container-throttled"
    );
    assert!(refused.description().starts_with("ThrottlingException"));
    let stats = e.hub.stats();
    assert_eq!((stats.throttled_c2d, stats.c2d_enqueued), (1, 100));
    e.shutdown().await;
}

/// A fleetsim device `id` with `behaviour` (YAML) living against `e`'s hub until `stop`; its
/// recorder and its life's task (which ends with its report).
async fn spawn_device(
    e: &Emulators,
    id: &str,
    behaviour: &str,
    stop: &CancellationToken,
) -> (
    Arc<Recorder>,
    tokio::task::JoinHandle<fleetsim::device::DeviceReport>,
) {
    let recorder = Arc::new(Recorder::new());
    let services = Arc::new(Services::<HubBackends> {
        ca: common::ezca(e).await,
        registry: Some(HubRegistry(common::registry(e))),
        provisioning: None,
        transport: common::transport(e),
        recorder: recorder.clone(),
        backoff: Default::default(),
        gate: Default::default(),
        keys: fleetsim::device::keys::KeySource::fresh(),
        state: None,
    });
    let b: fleetsim::scenario::Behaviour = serde_saphyr::from_str(behaviour).unwrap();
    let cloud = fleetsim::device::behaviour::CloudBehaviour::from_scenario(&b).unwrap();
    let spec = fleetsim::device::DeviceSpec {
        index: 0,
        id: id.into(),
        key_kind: fleetsim::crypto::KeyKind::P256,
        validity_days: 10,
        renew_fraction: 0.8,
        telemetry: fleetsim::device::messages::TelemetryPlan::every(Duration::from_secs(60)),
        at_least_once: true,
        register: true,
        seed: 11,
        renewal: Default::default(),
        control: Default::default(),
        cloud: Some(Arc::new(cloud)),
        resume: None,
    };
    let now = tokio::time::Instant::now();
    let device = tokio::spawn(run_device(spec, services, now, stop.clone()));
    (recorder, device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleetsim_device_times_and_counts_what_it_receives() {
    let e = common::start_emulators(Clock::real()).await;
    let stop = CancellationToken::new();
    let behaviour = "c2d: {reject: 30%, abandon: 30%}\n";
    let (recorder, device) = spawn_device(&e, "c2d-fleetsim", behaviour, &stop).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !e.hub.is_connected("c2d-fleetsim") {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 20 stamped 250 ms in the past, 5 without a stamp, 1 with one that is not a time.
    for i in 0..26 {
        let mut m = message("c2d-fleetsim", &format!("m{i}"), Ack::Positive);
        match i {
            0..20 => m
                .properties
                .push((SENT_AT_PROPERTY.into(), Some((now_ms() - 250).to_string()))),
            25 => m
                .properties
                .push((SENT_AT_PROPERTY.into(), Some("noon".into()))),
            _ => {}
        }
        e.c2d.enqueue(m).unwrap();
    }
    while e.c2d.pending("c2d-fleetsim") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not all completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let report = device.await.unwrap();
    let cloud = report.cloud;
    assert_eq!(cloud.c2d_received, 26, "{cloud:?}");
    assert!(
        cloud.c2d_rejected > 0 && cloud.c2d_abandoned > 0,
        "{cloud:?}"
    );
    assert!(cloud.c2d_rejected + cloud.c2d_abandoned < 26, "{cloud:?}");
    assert_eq!(cloud.malformed, 1);
    // Acknowledged all the same: MQTT has no reject or abandon.
    let feedback = e.c2d.drain_feedback();
    assert_eq!(feedback.len(), 26);
    assert!(feedback.iter().all(|f| f.status == FeedbackStatus::Success));
    let snapshot = recorder.snapshot();
    assert_eq!(snapshot.count(Phase::C2dDelivery, Outcome::Ok), 20);
    let latency = &snapshot.latency[&(Phase::C2dDelivery, Outcome::Ok)];
    assert!(
        latency.min() >= 245_000 && latency.max() < 10_000_000,
        "from the stamp to receipt (HDR-rounded), in µs: {}..{}",
        latency.min(),
        latency.max()
    );
    assert_eq!(snapshot.errors.get("c2d.delivery/bad_sent_at"), Some(&1));
    e.shutdown().await;
}

#[tokio::test]
async fn the_device_transport_hands_over_c2d_messages() {
    let e = common::start_emulators(Clock::real()).await;
    let d = enrolled(&e, "c2d-transport").await;
    e.c2d.enqueue(message(&d.id, "t1", Ack::None)).unwrap();
    let transport = common::transport(&e);
    let mut session = DeviceTransport::connect(&transport, &d.id, d.issued.chain.clone(), &d.key)
        .await
        .unwrap();
    let filter = topics::Subscription::C2d.filter(&d.id);
    DeviceSession::subscribe(&mut session, vec![(filter, true)])
        .await
        .unwrap();
    let incoming = DeviceSession::incoming(&mut session);
    let delivery = match tokio::time::timeout(Duration::from_secs(5), incoming).await {
        Ok(Incoming::Message(m)) => m,
        other => panic!("expected the message, got {other:?}"),
    };
    let Some(CloudMessage::C2d { properties }) =
        topics::parse_cloud_message(&delivery.topic, &d.id)
    else {
        panic!("{}", delivery.topic)
    };
    let r = Received::from_properties(properties);
    assert_eq!(r.message_id.as_deref(), Some("t1"));
    assert_eq!(r.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(&delivery.payload[..], b"{\"id\":\"t1\"}");
    // rumqttc acknowledged it on receipt: completed in the hub.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while e.c2d.pending(&d.id) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    DeviceSession::close(session).await;
    e.shutdown().await;
}
