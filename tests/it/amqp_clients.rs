//! fleetsim's own AMQP clients against the hub emulator's AMQP endpoint on real sockets: the
//! operator's C2D sender (accepted with its properties, the 51st message to a device refused
//! as queue full, oversize, unknown device, a bad SAS as a typed error, the hub's C2D throttle)
//! and the backend's Event Hub consumer (what devices sent, with annotations, properties and
//! body; consumer groups; start positions).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::emulator::Emulators;
use fleetsim::emulator::amqp::c2d::C2dLimits;
use fleetsim::emulator::amqp::{
    AccessPolicy, AmqpConfig, AmqpEndpoint, C2dQueues, EventLog, EventLogConfig,
};
use fleetsim::emulator::tls::ServerPki;
use fleetsim::iothub::ConnectionString;
use fleetsim::iothub::amqp::eventhub::StartPosition;
use fleetsim::iothub::amqp::{
    AmqpError, C2dOutcome, C2dSend, C2dSender, Endpoint, EventHubConnectionString, EventHubConsumer,
};
use fleetsim::iothub::identity::Device;
use tokio::time::Instant;

fn endpoint(
    host: &str,
    addr: std::net::SocketAddr,
    root: &rustls_pki_types::CertificateDer<'static>,
) -> Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    Endpoint {
        host: host.into(),
        address: addr.to_string(),
        roots: Arc::new(roots),
        timeout: Duration::from_secs(10),
    }
}

fn hub_endpoint(e: &Emulators) -> Endpoint {
    endpoint(common::HUB_HOST, e.amqp_addr, &e.tls_root)
}

fn message(device: &str, id: &str, body: &[u8]) -> C2dSend {
    C2dSend {
        device_id: device.into(),
        message_id: Some(id.into()),
        correlation_id: Some(format!("corr-{id}")),
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        expiry_ms: Some(4_102_444_800_000),
        ack: Some("full".into()),
        properties: vec![("colour".into(), "blue".into())],
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn the_c2d_sender_gets_the_hubs_dispositions() {
    let e = common::start_emulators(Clock::real()).await;
    e.hub.restore_devices(&[
        Device::certificate_authority("dev-1"),
        Device::certificate_authority("dev-2"),
    ]);
    let mut sender = C2dSender::connect(&hub_endpoint(&e), &e.hub.connection_string())
        .await
        .unwrap();
    let before = fleetsim::iothub::amqp::now_ms();
    let outcome = sender.send(&message("dev-1", "m0", b"{\"on\":true}")).await;
    assert_eq!(outcome.unwrap(), C2dOutcome::Accepted);
    let queued = e.c2d.next_for_delivery("dev-1").unwrap();
    assert_eq!(queued.message_id.as_deref(), Some("m0"));
    assert_eq!(queued.correlation_id.as_deref(), Some("corr-m0"));
    assert_eq!(queued.content_type.as_deref(), Some("application/json"));
    assert_eq!(queued.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(queued.expiry_ms, Some(4_102_444_800_000));
    assert_eq!(&queued.body[..], b"{\"on\":true}");
    assert_eq!(queued.properties[0], ("colour".into(), Some("blue".into())));
    let sent_at: i64 = queued
        .properties
        .iter()
        .find(|(k, _)| k == fleetsim::iothub::SENT_AT_PROPERTY)
        .and_then(|(_, v)| v.as_deref())
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent_at >= before && sent_at <= fleetsim::iothub::amqp::now_ms());

    for i in 1..50 {
        let outcome = sender.send(&message("dev-1", &format!("m{i}"), b"x")).await;
        assert_eq!(outcome.unwrap(), C2dOutcome::Accepted, "message {i}");
    }
    let full = sender.send(&message("dev-1", "m50", b"x")).await.unwrap();
    assert_eq!(full, C2dOutcome::QueueFull, "the 51st pending message");
    assert_eq!(e.c2d.pending("dev-1"), 50);

    let big = sender
        .send(&message("dev-2", "big", &vec![b'x'; 70 * 1024]))
        .await
        .unwrap();
    assert_eq!(big, C2dOutcome::TooLarge);
    let nobody = sender.send(&message("nobody", "n", b"x")).await.unwrap();
    assert_eq!(nobody, C2dOutcome::DeviceNotFound);
    // The connection carries on after refusals.
    let ok = sender.send(&message("dev-2", "after", b"x")).await.unwrap();
    assert_eq!(ok, C2dOutcome::Accepted);
    sender.close().await;
    e.shutdown().await;
}

#[tokio::test]
async fn a_bad_sas_is_a_typed_error() {
    let e = common::start_emulators(Clock::real()).await;
    let wrong = ConnectionString::new(
        common::HUB_HOST,
        "iothubowner",
        "AgECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    let refused = C2dSender::connect(&hub_endpoint(&e), &wrong).await;
    match refused {
        Err(err @ AmqpError::Status { status: 401, .. }) => {
            assert!(err.is_unauthorized());
            assert_eq!(err.kind(), "amqp_status_401");
        }
        Err(other) => panic!("expected a 401 from $cbs, got {other}"),
        Ok(_) => panic!("a wrong key was accepted"),
    }
    let unknown = ConnectionString::new(
        common::HUB_HOST,
        "nobody",
        "AgECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    let err = C2dSender::connect(&hub_endpoint(&e), &unknown)
        .await
        .err()
        .unwrap();
    assert!(err.is_unauthorized(), "{err}");
    // Nothing listens: a connect error, not a hang.
    let mut nowhere = hub_endpoint(&e);
    nowhere.address = "127.0.0.1:1".into();
    let err = C2dSender::connect(&nowhere, &e.hub.connection_string())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, AmqpError::Connect { .. }), "{err}");
    e.shutdown().await;
}

#[tokio::test]
async fn the_hubs_c2d_throttle_is_an_outcome() {
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let pki = ServerPki::new("throttled hub").unwrap();
    let limits = C2dLimits {
        sends_per_minute: Some(1.0),
        ..Default::default()
    };
    let queues = Arc::new(C2dQueues::new(limits, |_| true));
    let config = AmqpConfig {
        host_name: common::HUB_HOST.into(),
        entity: "test-hub".into(),
        policies: vec![AccessPolicy {
            name: "service".into(),
            primary_key: KEY.into(),
            secondary_key: None,
        }],
    };
    let log = Arc::new(EventLog::new(EventLogConfig::default()));
    let amqp = AmqpEndpoint::new(config, queues.clone(), log);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = AmqpEndpoint::tls_config(&pki, &[common::HUB_HOST.to_string()]).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = amqp.serve(listener, tls, async move { stopped.cancelled().await });

    let credentials = ConnectionString::new(common::HUB_HOST, "service", KEY);
    let mut sender = C2dSender::connect(
        &endpoint(common::HUB_HOST, addr, &pki.root_der()),
        &credentials,
    )
    .await
    .unwrap();
    let first = sender.send(&message("d", "1", b"x")).await.unwrap();
    let second = sender.send(&message("d", "2", b"x")).await.unwrap();
    assert_eq!(
        (first, second),
        (C2dOutcome::Accepted, C2dOutcome::Throttled)
    );
    assert_eq!(queues.pending("d"), 1);
    sender.close().await;
    stop.cancel();
    let _ = server.await;
}

/// Appends reading `i` of `device` as the hub does for a D2C message.
fn append(log: &EventLog, device: &str, i: u32) {
    log.append(
        device,
        vec![
            ("$.ct".into(), "application/json".into()),
            ("$.mid".into(), format!("{device}-{i}")),
            ("seq".into(), i.to_string()),
        ],
        bytes::Bytes::from(format!("{{\"reading\":{i}}}")),
    );
}

async fn consumer(
    e: &Emulators,
    group: &str,
    start: StartPosition,
) -> Result<EventHubConsumer, AmqpError> {
    let cs = EventHubConnectionString::parse(&e.event_hub_connection_string()).unwrap();
    EventHubConsumer::connect(&hub_endpoint(e), &cs, group, &start).await
}

/// Reads until `n` events came or 10 s passed, then 300 ms more for any extra.
async fn read(c: &mut EventHubConsumer, n: usize) -> Vec<fleetsim::iothub::amqp::ReceivedEvent> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        match c.next(deadline).await.unwrap() {
            Some(ev) => got.push(ev),
            None => break,
        }
    }
    let linger = Instant::now() + Duration::from_millis(300);
    while let Some(ev) = c.next(linger).await.unwrap() {
        got.push(ev);
    }
    got
}

#[tokio::test]
async fn the_consumer_reads_every_partition_from_its_start_position() {
    let e = common::start_emulators(Clock::real()).await;
    let log = e.hub.event_log();
    log.add_consumer_group("backend");
    let devices = ["dev-a", "dev-b", "dev-c", "dev-d", "dev-e"];
    for d in devices {
        append(&log, d, 0);
    }
    let mut earliest = consumer(&e, "$Default", StartPosition::Earliest)
        .await
        .unwrap();
    assert_eq!(earliest.partition_ids(), ["0", "1", "2", "3"]);
    let mut latest = consumer(&e, "backend", StartPosition::Latest)
        .await
        .unwrap();
    for d in devices {
        append(&log, d, 1);
    }

    let old_and_new = read(&mut earliest, 10).await;
    assert_eq!(old_and_new.len(), 10);
    for ev in &old_and_new {
        let device = ev.device_id.as_deref().unwrap();
        assert!(devices.contains(&device), "{ev:?}");
        assert_eq!(ev.partition, log.partition_of(device).to_string());
        let i = ev.property("seq").unwrap();
        assert_eq!(
            ev.message_id.as_deref(),
            Some(format!("{device}-{i}").as_str())
        );
        assert_eq!(ev.content_type.as_deref(), Some("application/json"));
        assert_eq!(ev.body, format!("{{\"reading\":{i}}}").into_bytes());
        assert!(ev.sequence_number.is_some() && ev.enqueued_ms.is_some());
    }
    let new_only = read(&mut latest, 5).await;
    assert_eq!(
        new_only.len(),
        5,
        "@latest skips what came before: {new_only:?}"
    );
    assert!(new_only.iter().all(|ev| ev.property("seq") == Some("1")));

    // After a sequence number: what follows it in that partition.
    let p = log.partition_of("dev-a").to_string();
    let first_a = old_and_new
        .iter()
        .find(|ev| ev.device_id.as_deref() == Some("dev-a") && ev.property("seq") == Some("0"))
        .unwrap();
    let mut after = consumer(
        &e,
        "$Default",
        StartPosition::AfterSequence(first_a.sequence_number.unwrap()),
    )
    .await
    .unwrap();
    let later = read(&mut after, 1).await;
    assert!(later.iter().any(|ev| ev.partition == p
        && ev.device_id.as_deref() == Some("dev-a")
        && ev.property("seq") == Some("1")));
    assert!(
        !later
            .iter()
            .any(|ev| ev.partition == p && ev.sequence_number <= first_a.sequence_number)
    );

    let refused = consumer(&e, "nobody", StartPosition::Latest)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&refused, AmqpError::LinkRefused { condition, .. } if condition == "amqp:not-found"),
        "{refused}"
    );
    earliest.close().await;
    latest.close().await;
    after.close().await;
    e.shutdown().await;
}
