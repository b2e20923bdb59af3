//! IoT Hub's throttles and daily quota in the emulator: requests over a throttle are first held
//! back (traffic shaping), then refused (the connection closed without CONNACK over MQTT, 429 with
//! `Retry-After` over REST); with the daily quota spent, connections are severed and refused and
//! REST answers 403002.

use crate::common;

use std::time::{Duration, Instant};

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::emulator::HubConfig;
use fleetsim::emulator::hub::throttle::HubLimits;
use fleetsim::iothub::HubError;
use rumqttc::mqttbytes::v4::ConnectReturnCode;

fn limits(f: impl FnOnce(&mut HubLimits)) -> HubConfig {
    let mut limits = HubLimits::unlimited();
    f(&mut limits);
    HubConfig {
        limits,
        ..HubConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_rate_are_shaped_then_refused() {
    // 5 connections/s: a burst of 5, then one every 200 ms, held back at most 300 ms.
    let e = common::start_emulators_with(
        Clock::real(),
        limits(|l| {
            l.connections_per_sec = Some(5.0);
            l.shaping = Duration::from_millis(300);
        }),
    )
    .await;
    let ca = common::ezca(&e).await;
    let registry = HubRegistry(common::registry(&e));
    let transport = common::transport(&e);
    let mut devices = Vec::new();
    for i in 0..12 {
        let id = format!("burst-{i}");
        registry.register(&id).await.unwrap();
        devices.push((id.clone(), common::enrol(&ca, &id).await));
    }

    // The throttle meters CONNECTs, so the TLS handshakes happen first and the 12 CONNECTs are
    // sent together: sent straight after their handshakes, they met the throttle only as fast
    // as this machine completes 12 handshakes, and on a loaded 2-core machine that spread them
    // over more than the ~400 ms the refusals need (past that, the rate admits them all).
    let sessions = futures_util::future::join_all(devices.iter().map(|(_, (key, issued))| {
        common::RawMqtt::tls(&e, Some((issued.chain.clone(), key.private_key_der())))
    }))
    .await;
    let attempts = sessions
        .into_iter()
        .zip(&devices)
        .map(|(mut session, (id, _))| async move {
            let t = Instant::now();
            let code = session.send_connect(id, "", 60, true).await;
            (code, t.elapsed())
        });
    let results = futures_util::future::join_all(attempts).await;
    let accepted: Vec<Duration> = results
        .iter()
        .filter(|(code, _)| *code == Some(ConnectReturnCode::Success))
        .map(|(_, t)| *t)
        .collect();
    let refused = results.iter().filter(|(code, _)| code.is_none()).count();
    assert_eq!(
        accepted.len() + refused,
        12,
        "every attempt was accepted or closed without CONNACK: {results:?}"
    );
    // All at once: the burst of 5 and one shaped 200 ms pass, the rest are further than the
    // 300 ms window away.
    assert!(
        (5..=8).contains(&accepted.len()),
        "the burst and the shaped pass: {} accepted: {results:?}",
        accepted.len()
    );
    assert!(
        refused >= 4,
        "past the shaping window connections are closed: {refused} refused"
    );
    assert!(
        accepted.iter().any(|t| *t >= Duration::from_millis(150)),
        "some CONNACKs were held back: {accepted:?}"
    );
    assert_eq!(e.hub.stats().throttled as usize, refused);

    // Those refused get in once the rate allows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ((id, (key, issued)), (code, _)) in devices.iter().zip(&results) {
        if code.is_none() {
            transport
                .connect(id, issued.chain.clone(), key.private_key_der())
                .await
                .expect("retry connects");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    e.shutdown().await;
}

#[tokio::test]
async fn registry_over_the_rate_answers_429_with_retry_after() {
    let e = common::start_emulators_with(
        Clock::real(),
        limits(|l| {
            l.registry_per_sec = Some(1.0);
            l.shaping = Duration::ZERO;
        }),
    )
    .await;
    let registry = common::registry(&e);
    let device = fleetsim::iothub::registry::Device::certificate_authority("r-1");
    registry.create(&device).await.expect("first call passes");
    match registry.get("r-1").await {
        Err(HubError::Status {
            status: 429,
            code,
            retry_after,
            ..
        }) => {
            assert_eq!(code, "ThrottlingException");
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    registry
        .get("r-1")
        .await
        .expect("after Retry-After the call passes");
    e.shutdown().await;
}

#[tokio::test]
async fn a_spent_daily_quota_severs_and_refuses() {
    let e = common::start_emulators_with(
        Clock::real(),
        limits(|l| {
            l.daily_messages = Some(3);
            l.meter_bytes = 4096;
        }),
    )
    .await;
    let ca = common::ezca(&e).await;
    HubRegistry(common::registry(&e))
        .register("quota")
        .await
        .unwrap();
    let (key, issued) = common::enrol(&ca, "quota").await;
    let transport = common::transport(&e);
    let mut session = transport
        .connect("quota", issued.chain.clone(), key.private_key_der())
        .await
        .unwrap();
    let topic = || "devices/quota/messages/events/".to_string();
    session
        .publish(topic(), vec![b'x'; 100], true)
        .await
        .expect("1 meter");
    session
        .publish(topic(), vec![b'x'; 5000], true)
        .await
        .expect("2 meters");
    let over = session.publish(topic(), vec![b'x'; 10], true).await;
    assert!(
        matches!(over, Err(HubError::Closed(_))),
        "over the quota: severed, got {over:?}"
    );
    assert_eq!(e.hub.device_stats("quota").messages, 2);

    match transport
        .connect("quota", issued.chain.clone(), key.private_key_der())
        .await
    {
        Err(HubError::ClosedBeforeConnack) => {}
        Err(other) => panic!("expected a close before CONNACK, got {other}"),
        Ok(_) => panic!("connected with the quota spent"),
    }
    match common::registry(&e).get("quota").await {
        Err(HubError::Status {
            status: 403, code, ..
        }) => assert_eq!(code, "IotHubQuotaExceeded"),
        other => panic!("expected 403002, got {other:?}"),
    }
    e.shutdown().await;
}
