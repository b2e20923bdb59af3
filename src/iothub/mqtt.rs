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
//! certificate swap never has an unacknowledged message to lose. A small driver task polls the
//! rumqttc event loop and forwards PUBACKs, SUBACKs, the messages the hub sends the device
//! (twin answers, desired properties, method requests, cloud-to-device messages) and the loss of
//! the connection to the session. A device that never subscribes gets no messages and holds
//! nothing for them: the queue of messages that arrived while it waited for a PUBACK or SUBACK
//! allocates only when one does.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::API_VERSION;
use super::delivery::hold;
pub use super::delivery::{Incoming, Message};
use super::error::HubError;
use super::lean::{self, LeanSession};
use super::tls::{DeviceTls, MqttDial, connack_code};

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
        let ep = &self.endpoint;
        let (mut eventloop, client) = self.eventloop(dial, device_id, credentials)?;
        let connack = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(connack_error(e)),
                }
            }
        };
        match tokio::time::timeout(ep.connect_timeout, connack).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(HubError::Timeout),
        }
        // Unbounded, so the driver never waits on the device: a device that is itself waiting
        // for room in the request channel (publishing answers) while the hub sends it more
        // would otherwise wait for a driver that waits for it. What the hub may send is bounded
        // by its own limits; an idle session's channel costs what a bounded one does.
        let (events_tx, events) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(eventloop, events_tx));
        Ok(MqttSession::Rumqttc(RumqttcSession {
            client,
            events,
            driver,
            ack_timeout: ep.ack_timeout,
            held: VecDeque::new(),
        }))
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

/// Polls a connected session's event loop, passing PUBACKs, SUBACKs and the hub's messages on,
/// until it disconnects or fails (the failure is passed on too).
async fn drive(mut eventloop: EventLoop, events: mpsc::UnboundedSender<SessionEvent>) {
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => SessionEvent::PubAck,
            Ok(Event::Incoming(Packet::SubAck(ack))) => SessionEvent::SubAck(
                ack.return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
            ),
            Ok(Event::Incoming(Packet::Publish(p))) => SessionEvent::Message(Box::new(Message {
                topic: p.topic,
                payload: p.payload,
            })),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => {
                let closed = SessionEvent::Closed(connection_error(e).to_string());
                let _ = events.send(closed);
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

enum SessionEvent {
    PubAck,
    /// A SUBACK: whether every filter was granted.
    SubAck(bool),
    /// Boxed, so a session's channel of events stays as small as it was without messages.
    Message(Box<Message>),
    Closed(String),
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

/// A live connection of one device over rumqttc's client.
pub struct RumqttcSession {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    driver: JoinHandle<()>,
    ack_timeout: Duration,
    /// Messages that arrived while the session waited for a PUBACK or SUBACK, oldest first.
    held: VecDeque<Message>,
}

impl RumqttcSession {
    /// Publishes and, for QoS 1, waits for the PUBACK.
    pub async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        at_least_once: bool,
    ) -> Result<(), HubError> {
        let qos = if at_least_once {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.client
            .publish(topic, qos, false, payload)
            .await
            .map_err(|e| HubError::Closed(e.to_string()))?;
        if !at_least_once {
            return Ok(());
        }
        let acked = async {
            loop {
                match self.events.recv().await {
                    Some(SessionEvent::PubAck) => return Ok(()),
                    Some(SessionEvent::SubAck(_)) => continue,
                    Some(SessionEvent::Message(m)) => hold(&mut self.held, *m),
                    Some(SessionEvent::Closed(reason)) => return Err(HubError::Closed(reason)),
                    None => return Err(HubError::Closed("connection driver stopped".into())),
                }
            }
        };
        match tokio::time::timeout(self.ack_timeout, acked).await {
            Ok(result) => result,
            Err(_) => Err(HubError::Timeout),
        }
    }

    /// Subscribes to `filters` (each with QoS 1 when `true`, else 0) and waits for the SUBACK.
    /// A refused filter is an error (IoT Hub closes the connection instead, which is one too).
    pub async fn subscribe(&mut self, filters: Vec<(String, bool)>) -> Result<(), HubError> {
        let filters = filters.into_iter().map(|(path, at_least_once)| {
            let qos = match at_least_once {
                true => QoS::AtLeastOnce,
                false => QoS::AtMostOnce,
            };
            SubscribeFilter::new(path, qos)
        });
        self.client
            .subscribe_many(filters)
            .await
            .map_err(|e| HubError::Closed(e.to_string()))?;
        let granted = async {
            loop {
                match self.events.recv().await {
                    Some(SessionEvent::SubAck(true)) => return Ok(()),
                    Some(SessionEvent::SubAck(false)) => {
                        return Err(HubError::Closed("the hub refused a subscription".into()));
                    }
                    // A late PUBACK, after its publish timed out.
                    Some(SessionEvent::PubAck) => continue,
                    Some(SessionEvent::Message(m)) => hold(&mut self.held, *m),
                    Some(SessionEvent::Closed(reason)) => return Err(HubError::Closed(reason)),
                    None => return Err(HubError::Closed("connection driver stopped".into())),
                }
            }
        };
        match tokio::time::timeout(self.ack_timeout, granted).await {
            Ok(result) => result,
            Err(_) => Err(HubError::Timeout),
        }
    }

    /// The next message from the hub, or the loss of the connection. Between requests no
    /// acknowledgement is awaited, so a late one (after a timeout) is skipped here.
    pub async fn incoming(&mut self) -> Incoming {
        if let Some(m) = self.held.pop_front() {
            return Incoming::Message(m);
        }
        loop {
            match self.events.recv().await {
                Some(SessionEvent::PubAck | SessionEvent::SubAck(_)) => continue,
                Some(SessionEvent::Message(m)) => return Incoming::Message(*m),
                Some(SessionEvent::Closed(reason)) => return Incoming::Closed(reason),
                None => return Incoming::Closed("connection driver stopped".into()),
            }
        }
    }

    /// Completes when the connection is lost, with the reason; messages from the hub are
    /// dropped meanwhile (for a session on its way out, e.g. the old one of a swap).
    pub async fn closed(&mut self) -> String {
        self.held.clear();
        loop {
            if let Incoming::Closed(reason) = self.incoming().await {
                return reason;
            }
        }
    }

    /// Sends DISCONNECT and waits briefly for it to leave.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        // Dropping `self` aborts the driver if it has not finished by then.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.driver).await;
    }
}

impl Drop for RumqttcSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A failure while waiting for CONNACK. IoT Hub answers bad credentials with CONNACK 5 but
/// throttles (and a spent quota) by closing the connection without a CONNACK.
fn connack_error(e: ConnectionError) -> HubError {
    use rumqttc::StateError;
    match e {
        ConnectionError::Io(e) | ConnectionError::MqttState(StateError::Io(e))
            if closed_by_peer(&e) =>
        {
            HubError::ClosedBeforeConnack
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => HubError::ClosedBeforeConnack,
        // DNS, refused or unreachable: the hub was never reached.
        ConnectionError::Io(e) => HubError::Transport(e.to_string()),
        other => connection_error(other),
    }
}

fn closed_by_peer(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionAborted | ConnectionReset | BrokenPipe
    )
}

fn connection_error(e: ConnectionError) -> HubError {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            HubError::ConnectRefused(connack_code(code).to_string())
        }
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => HubError::Timeout,
        ConnectionError::Tls(e) => HubError::Tls(e.to_string()),
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            HubError::Transport(e.to_string())
        }
        ConnectionError::Io(e) => HubError::Closed(e.to_string()),
        other => HubError::Closed(other.to_string()),
    }
}
