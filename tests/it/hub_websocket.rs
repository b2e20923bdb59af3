//! MQTT over WebSocket: `wss://.../$iothub/websocket` with subprotocol `mqtt`, the same CONNECT
//! rules and telemetry as MQTT on TLS, and a whole fleet run over it.

use crate::common;

use std::path::Path;

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::fleet::{self, RunOptions};
use fleetsim::iothub::HubError;

#[tokio::test]
async fn devices_connect_and_publish_over_websocket() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let registry = HubRegistry(common::registry(&e));
    for id in ["ws-1", "ws-2"] {
        registry.register(id).await.unwrap();
    }
    let (key, issued) = common::enrol(&ca, "ws-1").await;
    let ws = common::transport_over(&e, true);

    let mut session = ws
        .connect("ws-1", issued.chain.clone(), key.private_key_der())
        .await
        .expect("connects over wss");
    for i in 0..3 {
        session
            .publish(
                "devices/ws-1/messages/events/".into(),
                format!("{{\"n\":{i}}}").into_bytes(),
                true,
            )
            .await
            .expect("acked over wss");
    }
    session.disconnect().await;
    assert_eq!(e.hub.device_stats("ws-1").messages, 3);

    // The same rules hold: ws-1's certificate cannot act as ws-2.
    match ws
        .connect("ws-2", issued.chain.clone(), key.private_key_der())
        .await
    {
        Err(HubError::ConnectRefused(code)) => assert_eq!(code, "5"),
        other => panic!("expected CONNACK 5, got {:?}", other.err()),
    }
    e.shutdown().await;
}

#[tokio::test]
async fn only_the_iothub_path_with_the_mqtt_subprotocol_upgrades() {
    let e = common::start_emulators(Clock::real()).await;
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let upgrade = |path: &str, protocol: &str| {
        http.get(format!("https://{}{path}", e.hub_websocket_addr))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Protocol", protocol)
            .send()
    };
    let ok = upgrade("/$iothub/websocket", "mqtt").await.unwrap();
    assert_eq!(ok.status(), 101);
    assert_eq!(ok.headers()["sec-websocket-protocol"], "mqtt");
    assert_eq!(upgrade("/mqtt", "mqtt").await.unwrap().status(), 404);
    assert_eq!(
        upgrade("/$iothub/websocket", "chat")
            .await
            .unwrap()
            .status(),
        400
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_over_websocket() {
    let text = "name: ws\nduration: 6s\ntime_scale: 1s\ntarget:\n  embedded: {}\nfleet:\n  devices: 20\n  arrival_rate: 20/s\n  transport: websocket\ncertificate:\n  validity_days: 4\n  renew_at: 50%\ntelemetry:\n  interval: 1s\n";
    let scenario = fleetsim::scenario::parse(text, Path::new("ws.yaml")).unwrap();
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    let hub = outcome.hub.unwrap();
    for d in &outcome.devices {
        assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
        assert!(d.renewals >= 1 && d.messages_acked >= 3, "{d:?}");
        let stats = hub.device_stats(&d.id);
        assert_eq!(stats.messages, d.messages_acked);
        // Every connection (the first and the one after renewal) came inside a WebSocket.
        assert!(stats.connects >= 2, "{}: {stats:?}", d.id);
        assert_eq!(stats.websocket_connects, stats.connects, "{}", d.id);
    }
    assert_eq!(
        outcome.report.total_errors(),
        0,
        "{:?}",
        outcome.report.errors
    );
}
