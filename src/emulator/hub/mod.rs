//! The embedded IoT Hub emulator: an MQTT 3.1.1 device endpoint over TLS ([`mqtt`]) and over
//! WebSocket ([`websocket`]) written on tokio-rustls and rumqttc's codec; the registry REST API
//! ([`registry`]) authorised by SAS or Azure AD tokens; CA upload ([`admin`]); twins ([`twin`]);
//! and the SKU's throttles and daily quota ([`throttle`]).
//!
//! It keeps per-device counters (messages, bytes and 4 KB meters received, connects, drops, the
//! serial of every certificate a device connected with, and the properties of its last message)
//! so a run's "sent/acked" can be checked against what the hub actually received.

mod admin;
mod auth;
mod mqtt;
mod registry;
pub mod throttle;
pub mod twin;
mod websocket;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::EmulatorError;
use super::tls::{ServerPki, https_config};
use super::token::TokenAuthority;
use crate::iothub::ConnectionString;
use crate::iothub::registry::Device;

pub use auth::Refused;

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

/// What the hub saw of one device.
#[derive(Debug, Default)]
pub(crate) struct DeviceCounters {
    messages: AtomicU64,
    bytes: AtomicU64,
    meters: AtomicU64,
    last_message: Mutex<Option<ReceivedMessage>>,
    connects: AtomicU64,
    refused: AtomicU64,
    drops: AtomicU64,
    cert_serials: Mutex<Vec<String>>,
}

/// What the hub stored of a telemetry message.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Its properties, decoded from the topic's property bag, in order (`$.ct`, ..., then the
    /// application's).
    pub properties: Vec<(String, String)>,
    /// Payload bytes.
    pub bytes: u64,
    /// Its size as IoT Hub counts it (body and properties).
    pub size: u64,
    /// When it arrived, in Unix milliseconds.
    pub received_at_ms: u64,
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
}

pub(crate) struct Trust {
    roots: Vec<CertificateDer<'static>>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

pub(crate) struct HubState {
    host_name: String,
    disabled_connack: ConnectReturnCode,
    policy_name: String,
    policy_key: String,
    devices: Mutex<HashMap<String, Device>>,
    counters: Mutex<HashMap<String, Arc<DeviceCounters>>>,
    trust: RwLock<Trust>,
    /// The live connection of each device, so a new one (or disabling the device) can drop it.
    live: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next_connection: AtomicU64,
    etag_counter: AtomicU64,
    /// Azure AD stand-in for service calls in emulator mode.
    tokens: TokenAuthority,
    twins: Mutex<HashMap<String, twin::Twin>>,
    throttles: throttle::Throttles,
    /// Where registry changes go in a resumable soak.
    journal: std::sync::OnceLock<Arc<dyn super::persist::Journal>>,
}

/// Adds a verified CA to the hub's trust.
fn trust(state: &HubState, der: CertificateDer<'static>) {
    let mut trust = state.trust.write().unwrap_or_else(|p| p.into_inner());
    if !trust.roots.contains(&der) {
        trust.roots.push(der);
        trust.verifier = auth::verifier_for(&trust.roots);
    }
}

impl HubState {
    /// Journals the registry entry of `id` as it is now.
    fn journal_device(&self, id: &str) {
        if let Some(j) = self.journal.get() {
            let device = self
                .devices
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .cloned()
                .map(Box::new);
            j.record(super::persist::JournalEvent::HubDevice {
                id: id.to_string(),
                device,
            });
        }
    }

    fn counters(&self, device_id: &str) -> Arc<DeviceCounters> {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(device_id.to_string()).or_default().clone()
    }

    /// Drops the device's live connection, if any.
    fn drop_connection(&self, device_id: &str) {
        if let Some((_, token)) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device_id)
        {
            token.cancel();
        }
    }
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

    /// Uploads a (verified) CA certificate: devices whose chains end at it may connect.
    pub fn trust_ca(&self, der: CertificateDer<'static>) {
        trust(&self.state, der);
    }

    /// Serves MQTT over TLS on `listener` until `shutdown`.
    pub fn serve_mqtt(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_device_endpoint(listener, pki, mqtt::Framing::Tls, shutdown)
    }

    /// Serves MQTT over WebSocket (`wss://.../$iothub/websocket`, subprotocol `mqtt`) on
    /// `listener` until `shutdown`.
    pub fn serve_websocket(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_device_endpoint(listener, pki, mqtt::Framing::WebSocket, shutdown)
    }

    fn serve_device_endpoint(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        framing: mqtt::Framing,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let addr = listener.local_addr()?;
        let names = [
            addr.ip().to_string(),
            self.state.host_name.clone(),
            "localhost".into(),
        ];
        let identity = pki.issue_server(&names)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(auth::RequestClientCert::new()))
            .with_single_cert(identity.chain, identity.key)?;
        Ok(tokio::spawn(mqtt::serve(
            listener,
            Arc::new(config),
            self.state.clone(),
            framing,
            shutdown,
        )))
    }

    /// Serves the registry REST API over HTTPS on `listener` until `shutdown`.
    pub fn serve_registry(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let addr = listener.local_addr()?;
        let identity = pki.issue_server(&[
            addr.ip().to_string(),
            self.state.host_name.clone(),
            "localhost".into(),
        ])?;
        let config = https_config(identity)?;
        let router = registry::router(self.state.clone());
        Ok(tokio::spawn(super::tls::serve_https(
            listener, config, router, shutdown,
        )))
    }

    /// What the hub saw of `device_id` (zeros for a device it never heard from).
    pub fn device_stats(&self, device_id: &str) -> DeviceStats {
        let c = self.state.counters(device_id);
        DeviceStats {
            messages: c.messages.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            meters: c.meters.load(Ordering::Relaxed),
            last_message: crate::sync::lock(&c.last_message).clone(),
            connects: c.connects.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            cert_serials: c
                .cert_serials
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    pub fn stats(&self) -> HubStats {
        let mut s = HubStats::default();
        for c in self
            .state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            s.messages += c.messages.load(Ordering::Relaxed);
            s.bytes += c.bytes.load(Ordering::Relaxed);
            s.meters += c.meters.load(Ordering::Relaxed);
            s.connects += c.connects.load(Ordering::Relaxed);
            s.refused += c.refused.load(Ordering::Relaxed);
            s.drops += c.drops.load(Ordering::Relaxed);
        }
        s.throttled = self.state.throttles.throttled.load(Ordering::Relaxed);
        s.devices_registered = self
            .state
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64;
        s
    }

    /// Sends every registry change to `journal` from now on (set once).
    pub fn set_journal(&self, journal: Arc<dyn super::persist::Journal>) {
        let _ = self.state.journal.set(journal);
    }

    /// Seeds a restarted hub's registry.
    pub fn restore_devices(&self, devices: &[Device]) {
        let mut map = self.state.devices.lock().unwrap_or_else(|p| p.into_inner());
        for d in devices {
            map.insert(d.device_id.clone(), d.clone());
        }
    }

    /// The twin of `device_id` as the hub holds it.
    pub fn twin(&self, device_id: &str) -> Option<twin::Twin> {
        self.state
            .twins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .cloned()
    }

    /// Disables `device_id` in the registry, as a `PUT` with `status: disabled` does: its live
    /// connection is dropped and its reconnects are refused. False if the device is not registered.
    pub fn disable_device(&self, device_id: &str) -> bool {
        registry::disable(&self.state, device_id)
    }

    /// Whether `device_id` has a live MQTT connection right now.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.state
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(device_id)
    }

    /// The registry entry of `device_id`.
    pub fn device(&self, device_id: &str) -> Option<Device> {
        self.state
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .cloned()
    }
}
