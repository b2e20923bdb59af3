//! MQTT over WebSocket: `wss://.../$iothub/websocket` with subprotocol `mqtt`, the same CONNECT
//! rules and telemetry as MQTT on TLS, and a whole fleet run over it.

use crate::common;

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

/// An HTTP/1.1 client for the hub's HTTPS port that trusts the emulators.
fn http1(e: &fleetsim::emulator::Emulators) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .http1_only()
        .build()
        .unwrap()
}

/// A WebSocket upgrade request for `path` asking for `protocol`, on `addr`.
async fn upgrade(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &str,
) -> reqwest::Response {
    http.get(format!("https://{addr}{path}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", protocol)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_port_serves_rest_and_websocket_as_iothubs_443_does() {
    let e = common::start_emulators(Clock::real()).await;
    let port = e.hub_websocket_addr;
    assert_eq!(
        format!("https://{port}"),
        e.hub_registry_url,
        "WebSocket is on the registry's port by default"
    );
    let http = http1(&e);
    // Upgrades on /$iothub/websocket go by subprotocol: MQTT, or AMQP (IoT Hub's AMQPWSB10).
    let mqtt = upgrade(&http, port, "/$iothub/websocket", "mqtt").await;
    assert_eq!(mqtt.status(), 101);
    assert_eq!(mqtt.headers()["sec-websocket-protocol"], "mqtt");
    let amqp = upgrade(
        &http,
        port,
        "/$iothub/websocket?iothub-no-client-cert=true",
        "AMQPWSB10",
    )
    .await;
    assert_eq!(amqp.status(), 101);
    assert_eq!(amqp.headers()["sec-websocket-protocol"], "AMQPWSB10");
    // A subprotocol the hub does not speak is refused as a bad request, naming those it does.
    let chat = upgrade(&http, port, "/$iothub/websocket", "chat").await;
    assert_eq!(chat.status(), 400);
    // Not an upgrade: an HTTP answer saying what is missing, not a closed connection.
    let plain = http
        .get(format!("https://{port}/$iothub/websocket"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("WebSocket upgrade"));
    // An upgrade elsewhere is a REST request, authorised as any other: none given, 401.
    let elsewhere = upgrade(&http, port, "/mqtt?api-version=2021-04-12", "mqtt").await;
    assert_eq!(elsewhere.status(), 401);
    // And REST itself, on the same port.
    HubRegistry(common::registry(&e))
        .register("rest-on-443")
        .await
        .unwrap();
    let device = common::registry(&e).get("rest-on-443").await.unwrap();
    assert_eq!(device.device_id, "rest-on-443");
    e.shutdown().await;
}

#[tokio::test]
async fn amqp_over_websocket_reaches_the_amqp_endpoint() {
    use async_tungstenite::tungstenite::Message;
    use futures_util::{SinkExt, StreamExt};
    let e = common::start_emulators(Clock::real()).await;
    let addr = e.hub_websocket_addr;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut request =
        async_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "wss://{addr}/$iothub/websocket"
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "AMQPWSB10".parse().unwrap());
    let (ws, response) = async_tungstenite::tokio::client_async(request, tls)
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "AMQPWSB10");
    let (mut tx, mut rx) = ws.split();
    // The SASL protocol header: an AMQP endpoint answers with its own.
    let header = b"AMQP\x03\x01\x00\x00".to_vec();
    tx.send(Message::Binary(header.clone().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), rx.next())
        .await
        .expect("the AMQP endpoint answers")
        .unwrap()
        .unwrap();
    assert_eq!(&answer.into_data()[..8], &header[..]);
    e.shutdown().await;
}

#[tokio::test]
async fn a_websocket_port_of_its_own_still_works() {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut addrs = fleetsim::emulator::Addresses::ephemeral(ip);
    addrs.hub_websocket = Some(std::net::SocketAddr::new(ip, 0));
    let ca = fleetsim::emulator::CaConfig {
        clock: Clock::real(),
        max_cert_life_days: 30,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: false,
    };
    let hub = fleetsim::emulator::HubConfig::default();
    let e = fleetsim::emulator::Emulators::start_on(addrs, &ca, &hub)
        .await
        .unwrap();
    assert_ne!(
        format!("https://{}", e.hub_websocket_addr),
        e.hub_registry_url
    );
    let http = http1(&e);
    let ok = upgrade(&http, e.hub_websocket_addr, "/$iothub/websocket", "mqtt").await;
    assert_eq!(ok.status(), 101);
    let wrong = upgrade(&http, e.hub_websocket_addr, "/mqtt", "mqtt").await;
    assert_eq!(wrong.status(), 404);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_over_websocket() {
    let text = "name: ws\nduration: 6s\ntime_scale: 1s\ntarget:\n  embedded: {}\nfleet:\n  devices: 20\n  arrival_rate: 20/s\n  transport: websocket\ncertificate:\n  validity_days: 4\n  renew_at: 50%\ntelemetry:\n  interval: 1s\n";
    let scenario = crate::common::scenario(text, "ws.yaml");
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
