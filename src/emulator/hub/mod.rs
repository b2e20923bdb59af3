//! The embedded IoT Hub emulator: an MQTT 3.1.1 device endpoint over TLS (`mqtt`) and over
//! WebSocket ([`crate::emulator::websocket`]) written on tokio-rustls and rumqttc's codec; the registry REST API
//! (`registry`) authorised by SAS or Azure AD tokens (shared REST pieces in `rest`); CA
//! upload (`admin`); twins ([`twin`]); and the SKU's throttles and daily quota ([`throttle`]).
//! The endpoints work on one `state::HubState`; this file builds it and serves the endpoints on
//! the emulators' accept loop ([`crate::emulator::listener`]). Files import one way: the
//! endpoints use `state`, `auth` and `rest`, never this file.
//!
//! It keeps per-device counters (messages, bytes and 4 KB meters received, connects, drops, the
//! serial of every certificate a device connected with, and the properties of its last message)
//! so a run's "sent/acked" can be checked against what the hub actually received.

mod admin;
mod auth;
mod mqtt;
mod registry;
mod rest;
mod state;
pub mod throttle;
pub mod twin;

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
use super::listener::Listener;
use super::tls::{ServerPki, spawn_https};
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
}

/// A hub emulator. Cheap to clone; serve it with [`HubEmulator::serve_mqtt`] and
/// [`HubEmulator::serve_registry`].
#[derive(Clone)]
pub struct HubEmulator {
    state: Arc<HubState>,
}

impl HubEmulator {
    pub fn new(config: &HubConfig) -> Result<Self, EmulatorError> {
        let key: [u8; 32] = rand::random();
        let disabled_connack = match config.disabled_connack {
            5 => ConnectReturnCode::NotAuthorized,
            _ => ConnectReturnCode::ServiceUnavailable,
        };
        let tokens = TokenAuthority::new(super::token::IOTHUB_AUDIENCE)
            .map_err(|_| EmulatorError::Setup("no randomness for the token key".into()))?;
        Ok(Self {
            state: Arc::new(HubState {
                host_name: config.host_name.clone(),
                disabled_connack,
                policy_name: "iothubowner".into(),
                policy_key: base64::engine::general_purpose::STANDARD.encode(key),
                devices: Mutex::new(HashMap::new()),
                counters: Mutex::new(HashMap::new()),
                trust: RwLock::new(Trust {
                    roots: Vec::new(),
                    verifier: None,
                }),
                live: Mutex::new(HashMap::new()),
                next_connection: AtomicU64::new(1),
                etag_counter: AtomicU64::new(1),
                tokens,
                twins: Mutex::new(HashMap::new()),
                throttles: throttle::Throttles::new(config.limits),
                journal: std::sync::OnceLock::new(),
                listeners: Arc::default(),
                events: Arc::new(super::amqp::EventLog::new(Default::default())),
            }),
        })
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
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(crate::emulator::tls::RequestClientCert::new()))
            .with_single_cert(identity.chain, identity.key)?;
        let listener =
            Listener::new(listener, Arc::new(config)).counting(self.state.listeners.clone());
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
        let names = [self.state.host_name.as_str(), "localhost"];
        let counters = self.state.listeners.clone();
        let router = registry::router(self.state.clone());
        spawn_https(listener, pki, &names, counters, router, shutdown)
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
            refused: c.refused.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            cert_serials: lock(&c.cert_serials).clone(),
        }
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
        s.throttled = self.state.throttles.throttled.load(Ordering::Relaxed);
        s.tls_handshakes_failed = self.state.listeners.snapshot().handshakes_failed;
        s.devices_registered = lock(&self.state.devices).len() as u64;
        s
    }

    /// Sends every registry change to `journal` from now on (set once).
    pub fn set_journal(&self, journal: Arc<dyn super::persist::Journal>) {
        let _ = self.state.journal.set(journal);
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

    /// The registry entry of `device_id`.
    pub fn device(&self, device_id: &str) -> Option<Device> {
        lock(&self.state.devices).get(device_id).cloned()
    }
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
        Framing::Tls => mqtt::session(tls, peer, state, stop).await,
        Framing::WebSocket => {
            let session = move |stream| mqtt::session(stream, peer, state, stop);
            crate::emulator::websocket::bridge(tls, session).await;
        }
    }
}
