//! The device's MQTT 3.1.1 transport to IoT Hub, with a per-device rustls client certificate:
//! one rumqttc client per device (the default), or fleetsim's own session ([`super::lean`],
//! chosen with [`MqttTransport::use_lean`]); the trust store is shared by all of them.
//!
//! A transport connects to its endpoint's hub ([`MqttTransport::connect`]) or to a hub named per
//! device ([`MqttTransport::connect_to`]: the hub DPS assigned), dialled at the addresses the
//! transport was given for that name ([`MqttTransport::route`]: the embedded run's hubs on
//! loopback) or else at the name itself.
//!
//! A session keeps one QoS 1 publish in flight and waits for its PUBACK before the next, so a
//! certificate swap never has an unacknowledged message to lose. The rumqttc session lives in
//! `rumqttc_session` (a driver task per device), the lean one in [`super::lean`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::API_VERSION;
pub use super::delivery::{Incoming, Message};
use super::error::HubError;
use super::lean::{self, LeanSession};
pub use super::rumqttc_session::RumqttcSession;
use super::tls::{DeviceTls, MqttDial};

/// How a device reaches the hub.
#[derive(Debug, Clone)]
pub struct MqttEndpoint {
    /// Address to connect to (a DNS name or an IP literal); also the TLS server name.
    pub host: String,
    pub port: u16,
    /// The hub's host name as it goes in the username `{hub_host}/{device}/?api-version=...`.
    pub hub_host: String,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub ack_timeout: Duration,
    /// MQTT over WebSocket (`wss://host:port/$iothub/websocket`, subprotocol `mqtt`) instead of
    /// MQTT directly on TLS.
    pub websocket: bool,
}

pub struct MqttTransport {
    endpoint: MqttEndpoint,
    tls: DeviceTls,
    /// Further `(host, port)`s of the same endpoint; connections go round-robin over all.
    alternates: Vec<(String, u16)>,
    next: AtomicUsize,
    /// Where to dial hubs named per device, by host name (lower case).
    routes: HashMap<String, Vec<(String, u16)>>,
    /// Sessions are fleetsim's own ([`super::lean`]) rather than rumqttc's client.
    lean: bool,
    /// Lean sessions ended by a protocol violation of the hub.
    protocol_errors: lean::ProtocolErrors,
}

/// What a device proves itself with: a client certificate and its key, or a password (a SAS
/// token).
enum Credentials {
    Certificate(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    Password(String),
}

/// Where one connection goes: the address to dial and the hub's name for the username.
struct Dial<'a> {
    host: &'a str,
    port: u16,
    hub_host: &'a str,
}

impl MqttTransport {
    pub fn new(endpoint: MqttEndpoint, roots: RootCertStore) -> Self {
        Self {
            endpoint,
            tls: DeviceTls::new(roots),
            alternates: Vec::new(),
            next: AtomicUsize::new(0),
            routes: HashMap::new(),
            lean: false,
            protocol_errors: Default::default(),
        }
    }

    /// Opens sessions with fleetsim's own MQTT session ([`super::lean`]) when `lean`, else with
    /// rumqttc's client (the default).
    pub fn use_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    /// How many lean sessions ended because the hub broke the MQTT protocol.
    pub fn protocol_errors(&self) -> u64 {
        self.protocol_errors.load(Ordering::Relaxed)
    }

    /// Dials `addresses` (round-robin) for connections to the hub named `hub_host`, instead of
    /// the name itself.
    pub fn route(&mut self, hub_host: &str, addresses: impl IntoIterator<Item = (String, u16)>) {
        self.routes
            .entry(hub_host.to_ascii_lowercase())
            .or_default()
            .extend(addresses);
    }

    /// The address for the next connection to `hub_host`: a route's, or the name on the
    /// endpoint's port.
    fn pick_for<'a>(&'a self, hub_host: &'a str) -> (&'a str, u16) {
        match self.routes.get(&hub_host.to_ascii_lowercase()) {
            Some(addresses) if !addresses.is_empty() => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % addresses.len();
                let (h, p) = &addresses[i];
                (h, *p)
            }
            _ => (hub_host, self.endpoint.port),
        }
    }

    /// Spreads connections round-robin over the endpoint's own address and `more` (e.g. the
    /// embedded hub listening on 127.0.0.1..127.0.0.4).
    pub fn spread_over(&mut self, more: impl IntoIterator<Item = (String, u16)>) {
        self.alternates.extend(more);
    }

    /// The address for the next connection.
    fn pick(&self) -> (&str, u16) {
        let n = self.alternates.len() + 1;
        match self.next.fetch_add(1, Ordering::Relaxed) % n {
            0 => (&self.endpoint.host, self.endpoint.port),
            i => {
                let (h, p) = &self.alternates[i - 1];
                (h, *p)
            }
        }
    }

    /// The username IoT Hub expects.
    pub fn username(hub_host: &str, device_id: &str) -> String {
        format!("{hub_host}/{device_id}/?api-version={API_VERSION}")
    }

    /// Connects as `device_id`, presenting `chain` (leaf first) and proving possession of `key`.
    /// Returns once the hub has answered CONNACK 0.
    pub async fn connect(
        &self,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<MqttSession, HubError> {
        let (host, port) = self.pick();
        let hub_host = &self.endpoint.hub_host;
        let dial = Dial {
            host,
            port,
            hub_host,
        };
        self.connect_via(dial, device_id, chain, key).await
    }

    /// Like [`connect`](Self::connect), to the hub named `hub_host` (e.g. the one DPS
    /// assigned): its name goes in the username; it is dialled (and named in TLS) at its
    /// route's addresses if it has one, else at the name itself on the endpoint's port.
    pub async fn connect_to(
        &self,
        hub_host: &str,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<MqttSession, HubError> {
        let (host, port) = self.pick_for(hub_host);
        let dial = Dial {
            host,
            port,
            hub_host,
        };
        self.connect_via(dial, device_id, chain, key).await
    }

    /// Connects as `device_id` with a SAS token as password (no client certificate), signed
    /// with `key` for `{hub}/devices/{device_id}` and expiring at `expiry` (Unix seconds), to
    /// the hub named `hub_host` (routed as [`connect_to`](Self::connect_to) does) or, without
    /// one, to the endpoint's hub.
    pub async fn connect_sas(
        &self,
        hub_host: Option<&str>,
        device_id: &str,
        key: &str,
        expiry: u64,
    ) -> Result<MqttSession, HubError> {
        let (host, port, hub_host) = match hub_host {
            Some(hub) => {
                let (host, port) = self.pick_for(hub);
                (host, port, hub)
            }
            None => {
                let (host, port) = self.pick();
                (host, port, self.endpoint.hub_host.as_str())
            }
        };
        let dial = Dial {
            host,
            port,
            hub_host,
        };
        let resource = format!("{hub_host}/devices/{device_id}");
        let password = super::sas::token(&resource, key, None, expiry)?;
        let credentials = Credentials::Password(password);
        self.connect_with(dial, device_id, credentials).await
    }

    async fn connect_via(
        &self,
        dial: Dial<'_>,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<MqttSession, HubError> {
        let credentials = Credentials::Certificate(chain, key);
        self.connect_with(dial, device_id, credentials).await
    }

    async fn connect_with(
        &self,
        dial: Dial<'_>,
        device_id: &str,
        credentials: Credentials,
    ) -> Result<MqttSession, HubError> {
        if self.lean {
            return self.connect_lean(dial, device_id, credentials).await;
        }
        let (eventloop, client) = self.eventloop(dial, device_id, credentials)?;
        let ep = &self.endpoint;
        let session = RumqttcSession::open(eventloop, client, ep.connect_timeout, ep.ack_timeout);
        Ok(MqttSession::Rumqttc(session.await?))
    }

    async fn connect_lean(
        &self,
        dial: Dial<'_>,
        device_id: &str,
        credentials: Credentials,
    ) -> Result<MqttSession, HubError> {
        let ep = &self.endpoint;
        let (certificate, password) = match credentials {
            Credentials::Certificate(chain, key) => (Some((chain, key)), String::new()),
            Credentials::Password(password) => (None, password),
        };
        let tls = self
            .tls
            .client_config(certificate)
            .map_err(|e| HubError::Setup(e.to_string()))?;
        let lean_dial = lean::LeanDial {
            host: dial.host,
            port: dial.port,
            websocket: ep.websocket,
            client_id: device_id,
            username: Self::username(dial.hub_host, device_id),
            password,
            keep_alive: ep.keep_alive,
            connect_timeout: ep.connect_timeout,
            ack_timeout: ep.ack_timeout,
        };
        let session = lean::connect(lean_dial, tls, self.protocol_errors.clone()).await?;
        Ok(MqttSession::Lean(Box::new(session)))
    }

    /// The device's MQTT client over TLS (or WebSocket), not yet connected.
    fn eventloop(
        &self,
        dial: Dial<'_>,
        device_id: &str,
        credentials: Credentials,
    ) -> Result<(EventLoop, AsyncClient), HubError> {
        let ep = &self.endpoint;
        let target = MqttDial {
            client_id: device_id,
            username: Self::username(dial.hub_host, device_id),
            host: dial.host,
            port: dial.port,
            websocket: ep.websocket,
            keep_alive: ep.keep_alive,
        };
        let mut opts = match credentials {
            Credentials::Certificate(chain, key) => self.tls.mqtt_options(target, chain, key),
            Credentials::Password(password) => {
                self.tls.mqtt_options_with_password(target, &password)
            }
        }
        .map_err(|e| HubError::Setup(e.to_string()))?;
        // One publish in flight (the session waits for each PUBACK), so the window is 1 and the
        // request channel holds a publish and a disconnect.
        opts.set_clean_session(false)
            .set_inflight(1)
            .set_max_packet_size(256 * 1024 + 4096, 256 * 1024 + 4096);
        let (client, mut eventloop) = AsyncClient::new(opts, 2);
        // rumqttc preallocates 100 buffered events (~20 KiB); a device sees one at a time.
        eventloop.state.events = std::collections::VecDeque::new();
        // Small MQTT packets under TLS otherwise wait on Nagle + delayed ACK (~40 ms a round trip).
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(ep.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(network);
        Ok((eventloop, client))
    }
}

/// A live connection of one device, over rumqttc's client or fleetsim's own session.
pub enum MqttSession {
    Rumqttc(RumqttcSession),
    Lean(Box<LeanSession>),
}

impl MqttSession {
    /// Publishes and, for QoS 1, waits for the PUBACK.
    pub async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        at_least_once: bool,
    ) -> Result<(), HubError> {
        match self {
            Self::Rumqttc(s) => s.publish(topic, payload, at_least_once).await,
            Self::Lean(s) => s.publish(topic, payload, at_least_once).await,
        }
    }

    /// Subscribes to `filters` (each with QoS 1 when `true`, else 0) and waits for the SUBACK.
    pub async fn subscribe(&mut self, filters: Vec<(String, bool)>) -> Result<(), HubError> {
        match self {
            Self::Rumqttc(s) => s.subscribe(filters).await,
            Self::Lean(s) => s.subscribe(filters).await,
        }
    }

    /// The next message from the hub, or the loss of the connection.
    pub async fn incoming(&mut self) -> Incoming {
        match self {
            Self::Rumqttc(s) => s.incoming().await,
            Self::Lean(s) => s.incoming().await,
        }
    }

    /// Completes when the connection is lost, with the reason.
    pub async fn closed(&mut self) -> String {
        match self {
            Self::Rumqttc(s) => s.closed().await,
            Self::Lean(s) => s.closed().await,
        }
    }

    /// Disconnects cleanly.
    pub async fn disconnect(self) {
        match self {
            Self::Rumqttc(s) => s.disconnect().await,
            Self::Lean(s) => s.disconnect().await,
        }
    }
}
