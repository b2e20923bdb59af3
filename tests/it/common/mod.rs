//! Helpers shared by the integration tests: emulators on loopback and clients wired to them,
//! child processes bounded in time ([`process`]), Microsoft's SDKs as peers ([`sdk`]).

mod broker;
mod hosts;
pub mod kube;
mod live_run;
mod process;
mod sdk;
mod service;

pub use broker::{BrokerSession, ScriptedBroker};
pub use hosts::map_host;
pub use live_run::{LiveRun, metrics_listener, until_metrics};
pub use process::{
    Watched, emulate_for_sdks, emulate_on_free_ports, output_within, python, scratch_dir,
};
pub use sdk::run_driver;
pub use service::{Answer, Service};

use std::sync::Arc;
use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::adapters::EzcaCa;
use fleetsim::device::{CertificateAuthority, Issued};
use fleetsim::emulator::{CaConfig, Emulators, HubConfig};
use fleetsim::ezca::{Client as EzcaClient, StaticToken};
use fleetsim::iothub::mqtt::{MqttEndpoint, MqttTransport};
use fleetsim::iothub::registry::RegistryClient;

pub const HUB_HOST: &str = "test-hub.azure-devices.net";

pub async fn start_emulators(clock: Clock) -> Emulators {
    start_emulators_with(clock, HubConfig::default()).await
}

/// Emulators whose hub has `hub`'s settings (its host name is always [`HUB_HOST`]).
pub async fn start_emulators_with(clock: Clock, hub: HubConfig) -> Emulators {
    let ca = CaConfig {
        clock,
        max_cert_life_days: 30,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: false,
    };
    let hub = HubConfig {
        host_name: HUB_HOST.into(),
        ..hub
    };
    Emulators::start([127, 0, 0, 1].into(), &ca, &hub)
        .await
        .expect("emulators start")
}

pub fn ezca_client(e: &Emulators, token: &str) -> EzcaClient {
    EzcaClient::new(
        e.ca.url(),
        Arc::new(StaticToken::new(token)),
        std::slice::from_ref(&e.tls_root),
        true,
    )
    .expect("ezca client")
}

pub async fn ezca(e: &Emulators) -> EzcaCa {
    let token = e.ca.mint_token(
        "11111111-2222-3333-4444-555555555555",
        "tester@example.invalid",
        3600,
    );
    EzcaCa::discover(ezca_client(e, &token), ecdsa_ca(e).as_deref())
        .await
        .expect("discover CA")
}

pub fn registry(e: &Emulators) -> RegistryClient {
    RegistryClient::new(
        &e.hub_registry_url,
        e.hub.connection_string(),
        std::slice::from_ref(&e.tls_root),
        true,
    )
    .expect("registry client")
}

pub fn transport(e: &Emulators) -> MqttTransport {
    transport_over(e, false)
}

/// The device transport, over WebSocket when `websocket`.
pub fn transport_over(e: &Emulators, websocket: bool) -> MqttTransport {
    let addr = if websocket {
        e.hub_websocket_addr
    } else {
        e.hub_mqtt_addr
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).expect("root");
    let mut transport = MqttTransport::new(
        MqttEndpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            hub_host: HUB_HOST.into(),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            websocket,
        },
        roots,
    );
    transport.use_lean(lean_requested());
    transport
}

/// Whether `FLEETSIM_TRANSPORT_IMPL=lean` asks the tests to run their devices on the lean
/// session (`fleet.transport_impl: lean`) instead of the default, so the transport tests can
/// be run on both: `FLEETSIM_TRANSPORT_IMPL=lean cargo test --test it hub_`.
pub fn lean_requested() -> bool {
    std::env::var("FLEETSIM_TRANSPORT_IMPL").is_ok_and(|v| v == "lean")
}

/// Parses a test's scenario text, its devices on the lean session when
/// [`lean_requested`] (unless the text chooses itself).
pub fn scenario(text: &str, path: &str) -> fleetsim::scenario::Scenario {
    let mut scenario =
        fleetsim::scenario::parse(text, std::path::Path::new(path)).expect("scenario parses");
    if lean_requested() && !text.contains("transport_impl") {
        scenario.fleet.transport_impl = fleetsim::scenario::TransportImpl::Lean;
    }
    scenario
}

/// A key and a certificate for `id` from the emulated EZCA (domain registered first).
pub async fn enrol(ca: &EzcaCa, id: &str) -> (DeviceKey, Issued) {
    let key = DeviceKey::generate(KeyKind::P256).expect("keygen");
    ca.register_domain(id).await.expect("register domain");
    let issued = ca
        .issue(id, key.csr_pem(id).expect("csr"), 10)
        .await
        .expect("issue");
    (key, issued)
}

/// A bare MQTT 3.1.1 client over TLS, for tests that must send what a well-behaved client would
/// not (QoS 2, foreign topics, oversize packets, silence past the keep-alive).
pub struct RawMqtt {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: bytes::BytesMut,
}

impl RawMqtt {
    /// Connects with `chain`/`key` and sends CONNECT; returns the client and the CONNACK code.
    pub async fn connect(
        e: &Emulators,
        id: &str,
        issued: &Issued,
        key: &DeviceKey,
        keep_alive: u16,
    ) -> (Self, rumqttc::mqttbytes::v4::ConnectReturnCode) {
        Self::connect_with(
            e,
            id,
            Some((issued.chain.clone(), key.private_key_der())),
            "",
            keep_alive,
        )
        .await
    }

    /// Like [`RawMqtt::connect`], with an optional client certificate and a password.
    pub async fn connect_with(
        e: &Emulators,
        id: &str,
        identity: Option<(
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        )>,
        password: &str,
        keep_alive: u16,
    ) -> (Self, rumqttc::mqttbytes::v4::ConnectReturnCode) {
        Self::connect_session(e, id, identity, password, keep_alive, true).await
    }

    /// Like [`RawMqtt::connect_with`], with CleanSession as given.
    pub async fn connect_session(
        e: &Emulators,
        id: &str,
        identity: Option<(
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        )>,
        password: &str,
        keep_alive: u16,
        clean_session: bool,
    ) -> (Self, rumqttc::mqttbytes::v4::ConnectReturnCode) {
        let mut client = Self::tls(e, identity).await;
        match client
            .send_connect(id, password, keep_alive, clean_session)
            .await
        {
            Some(code) => (client, code),
            None => panic!("the hub closed the connection before CONNACK"),
        }
    }

    /// A TLS session with the hub's MQTT endpoint, presenting `identity` if given; nothing sent.
    pub async fn tls(
        e: &Emulators,
        identity: Option<(
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        )>,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(e.tls_root.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(e.hub_mqtt_addr)
            .await
            .unwrap();
        let name =
            rustls_pki_types::ServerName::try_from(e.hub_mqtt_addr.ip().to_string()).unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        Self {
            stream,
            buf: bytes::BytesMut::new(),
        }
    }

    /// Sends CONNECT for `id` and returns the CONNACK's code, or `None` when the hub closed the
    /// connection without one (as it does to a throttled connection).
    pub async fn send_connect(
        &mut self,
        id: &str,
        password: &str,
        keep_alive: u16,
        clean_session: bool,
    ) -> Option<rumqttc::mqttbytes::v4::ConnectReturnCode> {
        use rumqttc::mqttbytes::v4::{Connect, Packet};
        let mut connect = Connect::new(id);
        connect.keep_alive = keep_alive;
        connect.clean_session = clean_session;
        connect.set_login(
            fleetsim::iothub::mqtt::MqttTransport::username(HUB_HOST, id),
            password,
        );
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => Some(ack.code),
            None => None,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: rumqttc::mqttbytes::v4::Packet) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next packet, or `None` once the server has closed the connection (10 s at most).
    pub async fn recv(&mut self) -> Option<rumqttc::mqttbytes::v4::Packet> {
        use rumqttc::mqttbytes::{Error, v4::Packet};
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Some(p),
                Err(Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from server: {e}"),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .expect("server answered or closed within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

impl RawMqtt {
    /// Subscribes to `filters` (QoS 0) and waits for the SUBACK.
    pub async fn subscribe(&mut self, filters: &[&str]) {
        use rumqttc::mqttbytes::QoS;
        use rumqttc::mqttbytes::v4::{Packet, Subscribe, SubscribeFilter};
        let filters: Vec<_> = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtMostOnce))
            .collect();
        let mut sub = Subscribe::new_many(filters);
        sub.pkid = 1;
        self.send(Packet::Subscribe(sub)).await;
        match self.recv().await {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes `payload` on `topic` at QoS 0.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        use rumqttc::mqttbytes::QoS;
        use rumqttc::mqttbytes::v4::{Packet, Publish};
        let p = Publish::new(topic, QoS::AtMostOnce, payload.to_vec());
        self.send(Packet::Publish(p)).await;
    }

    /// The next PUBLISH from the hub (other packets skipped); fails the test on a close or after
    /// 10 s.
    pub async fn next_publish(&mut self) -> rumqttc::mqttbytes::v4::Publish {
        use rumqttc::mqttbytes::v4::Packet;
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => continue,
                None => panic!("the hub closed the connection"),
            }
        }
    }

    /// Whether a packet arrives within `limit` (`Some(None)`: the hub closed the connection).
    pub async fn recv_within(
        &mut self,
        limit: Duration,
    ) -> Option<Option<rumqttc::mqttbytes::v4::Packet>> {
        tokio::time::timeout(limit, self.recv()).await.ok()
    }
}

/// A registered, enrolled device connected over a bare MQTT client (keep-alive 60 s).
pub async fn online(e: &Emulators, id: &str) -> RawMqtt {
    use fleetsim::device::DeviceRegistry;
    let ca = ezca(e).await;
    fleetsim::device::adapters::HubRegistry(registry(e))
        .register(id)
        .await
        .expect("register");
    let (key, issued) = enrol(&ca, id).await;
    let (client, code) = RawMqtt::connect(e, id, &issued, &key, 60).await;
    assert_eq!(code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
    client
}

/// CaID of the emulator's ECDSA issuing CA (it also runs an RSA one).
pub fn ecdsa_ca(e: &Emulators) -> Option<String> {
    e.ca.ca_id(fleetsim::emulator::ca::IssuingKey::EcdsaP256)
}
