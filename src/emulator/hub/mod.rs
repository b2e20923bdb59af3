//! The embedded IoT Hub emulator: an MQTT 3.1.1 device endpoint over TLS (`mqtt`) and over
//! WebSocket ([`crate::emulator::websocket`]) written on tokio-rustls and rumqttc's codec; the
//! registry REST API (`registry`) authorised by SAS or Azure AD tokens (shared REST pieces in
//! `rest`); CA upload (`admin`); the service side: twins and statistics (`service`), direct
//! methods (`methods`, waiting calls in `pending`), queries (`query_api` over the query language
//! in [`query`]); twins ([`twin`], the device's side in `device_twin`); and the SKU's throttles
//! and daily quota ([`throttle`]). The endpoints work on one `state::HubState`; what the cloud
//! side pushes to a live connection goes through its `outbox`. This file builds the state and
//! serves the endpoints on the emulators' accept loop ([`crate::emulator::listener`]). Files
//! import one way: the endpoints use `state`, `auth` and `rest`, never this file.
//!
//! It keeps per-device counters (messages, bytes and 4 KB meters received, connects, drops, the
//! serial of every certificate a device connected with, and the properties of its last message)
//! so a run's "sent/acked" can be checked against what the hub actually received, and
//! service-side counters (methods, desired pushes, queries, throttled requests per class) in
//! [`HubStats`].

mod admin;
mod auth;
mod c2d_delivery;
mod credentials;
mod device_twin;
mod faults;
mod methods;
mod mqtt;
mod outbox;
mod pending;
pub mod query;
mod query_api;
mod registry;
mod rest;
mod service;
mod state;
pub mod throttle;
pub mod twin;
mod twin_view;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::error::EmulatorError;
use super::http::HttpLimits;
use super::listener::Listener;
use super::tls::{ServerPki, spawn_https_with};
use super::token::TokenAuthority;
use crate::iothub::ConnectionString;
use crate::iothub::registry::Device;
use crate::sync::lock;

pub use auth::Refused;
pub use state::ReceivedMessage;
use state::{HubState, Trust};

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The hub's host name: what devices put in their username and SAS tokens name.
    pub host_name: String,
    /// CONNACK code for a disabled device (3 "server unavailable" as observed; 5 per newer docs).
    pub disabled_connack: u8,
    /// Throttles and daily quota (unlimited unless a SKU is chosen).
    pub limits: throttle::HubLimits,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            host_name: "fleetsim-hub.azure-devices.net".into(),
            disabled_connack: 3,
            limits: throttle::HubLimits::unlimited(),
        }
    }
}

/// A copy of one device's counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeviceStats {
    pub messages: u64,
    pub bytes: u64,
    /// Meters of the daily quota its messages counted for (the SKU's meter, 4 KB by default).
    pub meters: u64,
    /// The last telemetry message it sent.
    pub last_message: Option<ReceivedMessage>,
    pub connects: u64,
    /// Of `connects`, those that came over MQTT-over-WebSocket.
    pub websocket_connects: u64,
    pub refused: u64,
    pub drops: u64,
    /// Serial (hex) of the client certificate of each accepted connection, in order.
    pub cert_serials: Vec<String>,
}

/// Totals over all devices, for the run's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HubStats {
    pub messages: u64,
    pub bytes: u64,
    /// Meters of the daily quota the messages counted for.
    pub meters: u64,
    pub connects: u64,
    pub refused: u64,
    pub drops: u64,
    pub devices_registered: u64,
    /// Requests refused by a throttle (connections closed, 429s).
    pub throttled: u64,
    /// TLS handshakes that failed or timed out, on any of the hub's endpoints.
    pub tls_handshakes_failed: u64,
    /// Devices connected right now.
    pub connected: u64,
    /// Direct-method calls past validation and throttling.
    pub methods_invoked: u64,
    /// Calls the device answered (200 to the service, whatever the device's status).
    pub methods_answered: u64,
    /// Calls the device did not answer in time (504101).
    pub methods_timed_out: u64,
    /// Calls to a device not connected and subscribed within the connect timeout (404103).
    pub methods_offline: u64,
    /// Device answers the hub could not pass on (502: not JSON, bad status, too large).
    pub method_responses_malformed: u64,
    /// Device answers for no waiting call (unknown, late or another device's request id).
    pub method_responses_unmatched: u64,
    /// Calls waiting for their device's answer right now.
    pub methods_waiting: u64,
    /// Desired-property notifications sent to connected devices.
    pub desired_pushed: u64,
    /// Notifications and method requests not delivered: the connection's queue was full.
    pub pushes_dropped: u64,
    /// Twin reads served (service GET, device GET).
    pub twin_reads: u64,
    /// Twin updates applied (service PATCH/PUT, device reported PATCH).
    pub twin_updates: u64,
    /// Queries answered.
    pub queries: u64,
    /// Queries refused with 400 (syntax, paging headers, body).
    pub queries_invalid: u64,
    /// Requests refused for IoT Hub's size limits (method payloads, twin sections).
    pub too_large: u64,
    /// Twin updates refused as malformed (not JSON, not an object, bad keys, too deep).
    pub invalid_updates: u64,
    /// Requests refused by each throttle (all included in `throttled`).
    pub throttled_twin_reads: u64,
    pub throttled_twin_updates: u64,
    pub throttled_methods: u64,
    pub throttled_queries: u64,
    /// Cloud-to-device sends refused by the C2D throttle (included in `throttled`).
    pub throttled_c2d: u64,
    /// Cloud-to-device messages queued, delivered (each try, redeliveries included), completed
    /// by the device's PUBACK, expired, purged by a CleanSession 1 connect; sends refused for a
    /// full queue.
    pub c2d_enqueued: u64,
    pub c2d_deliveries: u64,
    pub c2d_completed: u64,
    pub c2d_expired: u64,
    pub c2d_purged: u64,
    pub c2d_queue_full: u64,
    /// Messages dropped after 10 deliveries without a PUBACK.
    pub c2d_dead_lettered: u64,
}

/// A hub emulator. Cheap to clone; serve it with [`HubEmulator::serve_mqtt`] and
/// [`HubEmulator::serve_registry`].
#[derive(Clone)]
pub struct HubEmulator {
    state: Arc<HubState>,
}

impl HubEmulator {
    pub fn new(config: &HubConfig) -> Result<Self, EmulatorError> {
        Self::from_saved(config, None)
    }

    /// Like [`HubEmulator::new`], with the `iothubowner` key and the token key saved earlier
    /// (`fleetsim emulate --state`): connection strings and tokens handed out stay valid.
    pub fn from_saved(
        config: &HubConfig,
        saved: Option<&super::persist::HubSecrets>,
    ) -> Result<Self, EmulatorError> {
        let policy_key = match saved {
            Some(s) => s.policy_key.clone(),
            None => base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
        };
        let disabled_connack = match config.disabled_connack {
            5 => ConnectReturnCode::NotAuthorized,
            _ => ConnectReturnCode::ServiceUnavailable,
        };
        let tokens = match saved {
            Some(s) => TokenAuthority::with_secret(super::token::IOTHUB_AUDIENCE, s.token_secret),
            None => TokenAuthority::new(super::token::IOTHUB_AUDIENCE)
                .map_err(|_| EmulatorError::Setup("no randomness for the token key".into()))?,
        };
        let state = Arc::new_cyclic(|me: &std::sync::Weak<HubState>| {
            let c2d = c2d_queues(config, me.clone());
            HubState {
                host_name: config.host_name.clone(),
                disabled_connack,
                policy_name: "iothubowner".into(),
                policy_key,
                devices: Mutex::new(HashMap::new()),
                counters: Mutex::new(HashMap::new()),
                trust: RwLock::new(Trust {
                    roots: Vec::new(),
                    verifier: None,
                    certificates: HashMap::new(),
                }),
                live: Mutex::new(HashMap::new()),
                presence: tokio::sync::Notify::new(),
                methods: pending::Pending::default(),
                service: state::ServiceCounters::default(),
                next_connection: AtomicU64::new(1),
                etag_counter: AtomicU64::new(1),
                tokens,
                twins: Mutex::new(HashMap::new()),
                throttles: throttle::Throttles::new(config.limits),
                journal: std::sync::OnceLock::new(),
                listeners: Arc::default(),
                events: Arc::new(super::amqp::EventLog::new(Default::default())),
                c2d,
                c2d_sessions: Mutex::new(Default::default()),
                faults: Default::default(),
            }
        });
        Ok(Self { state })
    }

    /// The hub's cloud-to-device queues (what its AMQP endpoint fills).
    pub fn c2d(&self) -> Arc<super::amqp::C2dQueues> {
        self.state.c2d.clone()
    }

    /// An Azure AD-style bearer token the registry accepts in emulator mode.
    pub fn mint_token(&self, oid: &str, lifetime_secs: u64) -> String {
        self.state
            .tokens
            .mint(oid, "fleetsim@emulator.invalid", lifetime_secs)
    }

    pub fn host_name(&self) -> &str {
        &self.state.host_name
    }

    /// The `iothubowner` service connection string (holds the key: never log it).
    pub fn connection_string(&self) -> ConnectionString {
        ConnectionString::new(
            &self.state.host_name,
            &self.state.policy_name,
            &self.state.policy_key,
        )
    }

    /// The hub's telemetry as its Event Hub-compatible endpoint serves it.
    pub fn event_log(&self) -> Arc<super::amqp::EventLog> {
        self.state.events.clone()
    }

    /// The tier this hub is throttled as (`None`: unlimited).
    pub fn tier(&self) -> Option<(crate::iothub::quotas::Sku, u32)> {
        self.state.throttles.limits.tier
    }

    /// Uploads a (verified) CA certificate: devices whose chains end at it may connect.
    pub fn trust_ca(&self, der: CertificateDer<'static>) {
        auth::trust(&self.state, der);
    }

    /// Serves MQTT over TLS on `listener` until `shutdown`.
    pub fn serve_mqtt(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_device_endpoint(listener, pki, Framing::Tls, shutdown)
    }

    /// Serves MQTT over WebSocket (`wss://.../$iothub/websocket`, subprotocol `mqtt`) on
    /// `listener` until `shutdown`.
    pub fn serve_websocket(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_device_endpoint(listener, pki, Framing::WebSocket, shutdown)
    }

    fn serve_device_endpoint(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        framing: Framing,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let identity = pki.issue_for(&listener, &[self.state.host_name.as_str(), "localhost"])?;
        let config = crate::emulator::tls::client_cert_config(identity)?;
        let listener = Listener::new(listener, config).counting(self.state.listeners.clone());
        let state = self.state.clone();
        Ok(tokio::spawn(
            listener.serve(shutdown, move |tls, closing| {
                connection(tls, state.clone(), framing, closing)
            }),
        ))
    }

    /// Serves the registry REST API over HTTPS on `listener` until `shutdown`.
    pub fn serve_registry(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_registry_with(listener, pki, HttpLimits::default(), shutdown)
    }

    /// Like [`HubEmulator::serve_registry`], with `limits`; every request is authorised before
    /// its body is read (see `rest::http_options`).
    pub fn serve_registry_with(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        limits: HttpLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let names = [self.state.host_name.as_str(), "localhost"];
        let counters = self.state.listeners.clone();
        let options = rest::http_options(self.state.clone(), limits);
        spawn_https_with(
            listener,
            pki,
            &names,
            counters,
            self.rest_router(),
            options,
            shutdown,
        )
    }

    /// Serves IoT Hub's one HTTPS port on `listener` until `shutdown`, as Azure serves 443: the
    /// REST API by path and WebSocket upgrades on `/$iothub/websocket` by subprotocol, `mqtt` to
    /// the MQTT session and `AMQPWSB10` to `amqp` when given (see [`crate::emulator::shared_port`]).
    pub fn serve_shared(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        limits: HttpLimits,
        amqp: Option<crate::emulator::shared_port::Session>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let names = [self.state.host_name.as_str(), "localhost"];
        let upgrades = crate::emulator::shared_port::Upgrades {
            mqtt: Some(self.mqtt_session()),
            amqp,
        };
        let service = (
            self.rest_router(),
            rest::http_options(self.state.clone(), limits),
        );
        let counters = self.state.listeners.clone();
        crate::emulator::shared_port::spawn(
            listener, pki, &names, counters, service, upgrades, shutdown,
        )
    }

    /// The hub's REST API: registry, twins, methods, statistics, query.
    fn rest_router(&self) -> axum::Router {
        registry::routes()
            .merge(admin::routes())
            .merge(service::routes())
            .merge(methods::routes())
            .merge(query_api::routes())
            .with_state(self.state.clone())
    }

    /// The device MQTT session, for a WebSocket's byte stream.
    fn mqtt_session(&self) -> crate::emulator::shared_port::Session {
        let state = self.state.clone();
        std::sync::Arc::new(move |stream, peer, stop| {
            Box::pin(mqtt::session(
                stream,
                peer.certificates,
                state.clone(),
                stop,
                true,
            ))
        })
    }

    /// What the hub saw of `device_id` (zeros for a device it never heard from).
    pub fn device_stats(&self, device_id: &str) -> DeviceStats {
        let c = self.state.counters(device_id);
        DeviceStats {
            messages: c.messages.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            meters: c.meters.load(Ordering::Relaxed),
            last_message: lock(&c.last_message).clone(),
            connects: c.connects.load(Ordering::Relaxed),
            websocket_connects: c.websocket_connects.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            cert_serials: lock(&c.cert_serials).clone(),
        }
    }

    /// What the hub's accept loops saw (all its endpoints), panicking handlers included.
    pub fn listener_stats(&self) -> super::listener::ListenerStats {
        self.state.listeners.snapshot()
    }

    pub fn stats(&self) -> HubStats {
        let mut s = HubStats::default();
        for c in lock(&self.state.counters).values() {
            s.messages += c.messages.load(Ordering::Relaxed);
            s.bytes += c.bytes.load(Ordering::Relaxed);
            s.meters += c.meters.load(Ordering::Relaxed);
            s.connects += c.connects.load(Ordering::Relaxed);
            s.refused += c.refused.load(Ordering::Relaxed);
            s.drops += c.drops.load(Ordering::Relaxed);
        }
        let throttles = &self.state.throttles;
        s.throttled = throttles.throttled.load(Ordering::Relaxed);
        s.throttled_twin_reads = throttles.throttled(throttle::Class::TwinRead);
        s.throttled_twin_updates = throttles.throttled(throttle::Class::TwinUpdate);
        s.throttled_methods = throttles.throttled(throttle::Class::DirectMethod);
        s.throttled_queries = throttles.throttled(throttle::Class::Query);
        s.tls_handshakes_failed = self.state.listeners.snapshot().handshakes_failed;
        s.devices_registered = lock(&self.state.devices).len() as u64;
        s.connected = lock(&self.state.live).len() as u64;
        self.service_stats(&mut s);
        let c2d = self.state.c2d.stats();
        s.throttled_c2d = c2d.throttled;
        s.throttled += c2d.throttled;
        s.c2d_enqueued = c2d.enqueued;
        s.c2d_deliveries = c2d.deliveries;
        s.c2d_completed = c2d.completed;
        s.c2d_expired = c2d.expired;
        s.c2d_purged = c2d.purged;
        s.c2d_queue_full = c2d.queue_full;
        s.c2d_dead_lettered = c2d.dead_lettered;
        s
    }

    fn service_stats(&self, s: &mut HubStats) {
        let c = &self.state.service;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.methods_invoked = get(&c.methods_invoked);
        s.methods_answered = get(&c.methods_answered);
        s.methods_timed_out = get(&c.methods_timed_out);
        s.methods_offline = get(&c.methods_offline);
        s.method_responses_malformed = get(&c.method_responses_malformed);
        s.method_responses_unmatched = get(&c.method_responses_unmatched);
        s.methods_waiting = self.state.methods.len() as u64;
        s.desired_pushed = get(&c.desired_pushed);
        s.pushes_dropped = get(&c.pushes_dropped);
        s.twin_reads = get(&c.twin_reads);
        s.twin_updates = get(&c.twin_updates);
        s.queries = get(&c.queries);
        s.queries_invalid = get(&c.queries_invalid);
        s.too_large = get(&c.too_large);
        s.invalid_updates = get(&c.invalid_updates);
    }

    /// Sends every registry change to `journal` from now on (set once).
    pub fn set_journal(&self, journal: Arc<dyn super::persist::Journal>) {
        let _ = self.state.journal.set(journal);
    }

    /// What [`HubEmulator::from_saved`] restores (secret).
    pub fn secrets(&self) -> super::persist::HubSecrets {
        super::persist::HubSecrets {
            policy_key: self.state.policy_key.clone(),
            token_secret: self.state.tokens.secret(),
        }
    }

    /// Seeds a restarted hub's registry.
    pub fn restore_devices(&self, devices: &[Device]) {
        let mut map = lock(&self.state.devices);
        for d in devices {
            map.insert(d.device_id.clone(), d.clone());
        }
    }

    /// The twin of `device_id` as the hub holds it.
    pub fn twin(&self, device_id: &str) -> Option<twin::Twin> {
        lock(&self.state.twins).get(device_id).cloned()
    }

    /// Disables `device_id` in the registry, as a `PUT` with `status: disabled` does: its live
    /// connection is dropped and its reconnects are refused. False if the device is not registered.
    pub fn disable_device(&self, device_id: &str) -> bool {
        registry::disable(&self.state, device_id)
    }

    /// Creates `device_id` as an enabled CA-authenticated device, or makes the existing identity
    /// one, as DPS does on assignment. False if `device_id` is not a valid device id.
    pub fn provision_ca_device(&self, device_id: &str) -> bool {
        registry::provision_ca_device(&self.state, device_id)
    }

    /// Whether `device_id` has a live MQTT connection right now.
    pub fn is_connected(&self, device_id: &str) -> bool {
        lock(&self.state.live).contains_key(device_id)
    }

    /// The registry entry of `device_id`, with its connection state as the REST API shows it.
    pub fn device(&self, device_id: &str) -> Option<Device> {
        let device = lock(&self.state.devices).get(device_id).cloned()?;
        Some(self.state.device_view(&device))
    }
}

/// The hub's C2D queues: for registered devices, with the SKU's C2D throttle; a device that
/// gets a message wakes its live connection. `hub` is the state being built (weak: the state
/// owns the queues).
fn c2d_queues(config: &HubConfig, hub: std::sync::Weak<HubState>) -> Arc<super::amqp::C2dQueues> {
    let limits = super::amqp::c2d::C2dLimits {
        sends_per_minute: config.limits.c2d_per_min,
        ..Default::default()
    };
    let registry = hub.clone();
    let queues = super::amqp::C2dQueues::new(limits, move |id| {
        registry
            .upgrade()
            .is_some_and(|s| lock(&s.devices).contains_key(id))
    });
    queues.on_ready(move |id| {
        if let Some(outbox) = hub.upgrade().and_then(|s| s.outbox(id)) {
            outbox.wake();
        }
    });
    Arc::new(queues)
}

/// How MQTT packets travel inside the TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Directly on TLS (port 8883).
    Tls,
    /// In binary WebSocket messages on `/$iothub/websocket` with subprotocol `mqtt` (port 443).
    WebSocket,
}

/// One device connection, its TLS handshake done: MQTT directly or inside a WebSocket. `stop`
/// is cancelled when the endpoint shuts down.
async fn connection(
    tls: TlsStream<TcpStream>,
    state: Arc<HubState>,
    framing: Framing,
    stop: CancellationToken,
) {
    let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
    match framing {
        Framing::Tls => mqtt::session(tls, peer, state, stop, false).await,
        Framing::WebSocket => {
            let session = move |stream| mqtt::session(stream, peer, state, stop, true);
            crate::emulator::websocket::bridge(tls, session).await;
        }
    }
}
