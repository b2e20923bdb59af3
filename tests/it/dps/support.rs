//! What the DPS tests share: the emulators with DPS, the device client, the service REST API
//! signed with DPS's connection string, enrolment bodies, a foreign certificate, and a bare MQTT
//! client for what well-behaved clients never send.

use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::Issued;
use fleetsim::emulator::dps::DpsLimits;
use fleetsim::emulator::{DpsAddresses, DpsConfig, Emulators};
use fleetsim::iothub::dps::{DpsClient, DpsEndpoint, Polling, Registration};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use serde_json::{Value, json};

use crate::common;

pub const SCOPE: &str = "0ne0000F1EE";
pub const DPS_HOST: &str = "test-dps.azure-devices-provisioning.net";

/// DPS settings for tests: quick assignments and short retry-afters.
pub fn dps_config(limits: DpsLimits) -> DpsConfig {
    DpsConfig {
        host_name: DPS_HOST.into(),
        id_scope: Some(SCOPE.into()),
        retry_after_secs: 1,
        assignment_delay: Duration::from_millis(300),
        limits,
    }
}

pub async fn start(limits: DpsLimits) -> Emulators {
    let mut e = common::start_emulators(Clock::real()).await;
    e.start_dps(
        DpsAddresses::ephemeral([127, 0, 0, 1].into()),
        &dps_config(limits),
    )
    .await
    .expect("DPS starts");
    e
}

/// Waits scaled down tenfold, as a compressed run would.
pub fn fast_polling() -> Polling {
    Polling {
        scale: 0.1,
        ..Polling::default()
    }
}

pub fn client(e: &Emulators, polling: Polling, scope: &str, websocket: bool) -> DpsClient {
    let dps = e.dps.as_ref().expect("DPS running");
    let addr = if websocket {
        dps.websocket_addr
    } else {
        dps.mqtt_addr
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    DpsClient::new(
        DpsEndpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            id_scope: scope.into(),
            websocket,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            polling,
        },
        roots,
    )
}

pub async fn register(c: &DpsClient, id: &str, key: &DeviceKey, issued: &Issued) -> Registration {
    c.register(id, issued.chain.clone(), key.private_key_der(), None)
        .await
}

/// The service REST API, signed with the DPS connection string.
pub struct Service {
    http: reqwest::Client,
    base: String,
    credentials: fleetsim::iothub::ConnectionString,
}

impl Service {
    pub fn new(e: &Emulators) -> Self {
        let dps = e.dps.as_ref().expect("DPS running");
        let root = reqwest::Certificate::from_der(&e.tls_root).unwrap();
        Self {
            http: reqwest::Client::builder()
                .tls_certs_only([root])
                .build()
                .unwrap(),
            base: dps.service_url.clone(),
            credentials: dps.emulator.connection_string(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let url = format!("{}/{path}?api-version=2021-10-01", self.base);
        let mut req = self
            .http
            .request(method, url)
            .header("Authorization", self.credentials.sas_token(expiry).unwrap());
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(tag) = if_match {
            req = req.header("If-Match", format!("\"{tag}\""));
        }
        let resp = req.send().await.expect("service answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body), None)
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.call(reqwest::Method::DELETE, path, None, None).await.0
    }
}

/// An enrolment group trusting the CA uploaded under `ca` (`caReferences`).
pub fn group(id: &str, ca: &str, status: &str) -> Value {
    json!({
        "enrollmentGroupId": id,
        "attestation": {"type": "x509", "x509": {"caReferences": {"primary": ca}}},
        "provisioningStatus": status,
    })
}

pub fn pem(der: &[u8]) -> String {
    fleetsim::crypto::cert_to_pem(der)
}

/// A certificate for `cn` from a CA nobody enrolled (chain: leaf, CA).
pub fn foreign_certificate(
    cn: &str,
) -> (DeviceKey, Vec<rustls_pki_types::CertificateDer<'static>>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Some Other CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem(cn).unwrap()).unwrap();
    let mut leaf = rcgen::CertificateSigningRequestParams {
        params: CertificateParams::new(vec![cn.to_string()]).unwrap(),
        public_key: csr.public_key,
    };
    leaf.params.distinguished_name.push(DnType::CommonName, cn);
    leaf.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&issuer).unwrap();
    (key, vec![cert.der().clone(), ca_cert.der().clone()])
}

pub const REGISTER: &str = "$dps/registrations/PUT/iotdps-register/?$rid=";
pub const POLL: &str = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=";

/// A bare MQTT client to DPS, for requests a well-behaved client would not send.
pub struct RawDps {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: bytes::BytesMut,
    rid: u32,
}

impl RawDps {
    pub async fn connect(
        e: &Emulators,
        id: &str,
        key: &DeviceKey,
        issued: &Issued,
        scope: &str,
    ) -> (Self, ConnectReturnCode) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(e.tls_root.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(issued.chain.clone(), key.private_key_der())
        .unwrap();
        let addr = e.dps.as_ref().unwrap().mqtt_addr;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let mut raw = Self {
            stream,
            buf: bytes::BytesMut::new(),
            rid: 0,
        };
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(id);
        connect.keep_alive = 30;
        connect.set_login(DpsClient::username(scope, id), "");
        raw.send(Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack.code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = bytes::BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.write(&out).await;
    }

    /// The next packet, or `None` once DPS has closed the connection (10 s at most).
    pub async fn recv(&mut self) -> Option<Packet> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Some(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from DPS: {e}"),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            match read.await.expect("DPS answered or closed within 10 s") {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    pub async fn subscribe(&mut self) {
        let sub = rumqttc::mqttbytes::v4::Subscribe::new(
            "$dps/registrations/res/#",
            rumqttc::mqttbytes::QoS::AtLeastOnce,
        );
        self.send(Packet::Subscribe(sub)).await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    pub async fn publish(&mut self, topic: &str, body: &[u8]) {
        let p = rumqttc::mqttbytes::v4::Publish::new(
            topic,
            rumqttc::mqttbytes::QoS::AtMostOnce,
            body.to_vec(),
        );
        self.send(Packet::Publish(p)).await;
    }

    /// Publishes to `prefix` + a new request id (and whatever follows `&` in `prefix`'s tail)
    /// and returns DPS's answer to it.
    pub async fn request_raw(&mut self, prefix: &str, body: &[u8]) -> (String, Value) {
        self.rid += 1;
        let topic = match prefix.split_once('&') {
            Some((head, tail)) => format!("{head}{}&{tail}", self.rid),
            None => format!("{prefix}{}", self.rid),
        };
        self.publish(&topic, body).await;
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    assert!(
                        p.topic.contains(&format!("?$rid={}", self.rid)),
                        "{}",
                        p.topic
                    );
                    let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    return (p.topic, body);
                }
                Some(_) => continue,
                None => panic!("DPS closed the connection instead of answering {topic}"),
            }
        }
    }

    pub async fn request(&mut self, prefix: &str, body: &Value) -> (String, Value) {
        let bytes = match body {
            Value::Null => Vec::new(),
            b => serde_json::to_vec(b).unwrap(),
        };
        self.request_raw(prefix, &bytes).await
    }
}
