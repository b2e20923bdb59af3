//! The hub emulator's shared state, which its endpoints work on: the registry, per-device
//! counters, trust, the live connection of each device (with its [`Outbox`] for what the cloud
//! side pushes), twins, direct methods waiting for an answer, throttles, the service-side
//! counters and the journal. A device's connection state and last activity are kept here, not in
//! its registry entry; [`HubState::device_view`] lays them over the entry for the REST answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rumqttc::mqttbytes::v4::ConnectReturnCode;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::pending::Pending;
use super::throttle::Throttles;
use super::twin::{Twin, iso8601};
use crate::emulator::listener::ListenerCounters;
use crate::emulator::token::TokenAuthority;
use crate::iothub::registry::Device;
use crate::sync::lock;

/// What the hub saw of one device.
#[derive(Debug, Default)]
pub(super) struct DeviceCounters {
    pub(super) messages: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// Meters of the daily quota its messages counted for.
    pub(super) meters: AtomicU64,
    pub(super) last_message: Mutex<Option<ReceivedMessage>>,
    pub(super) connects: AtomicU64,
    /// Of `connects`, those inside a WebSocket.
    pub(super) websocket_connects: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) drops: AtomicU64,
    pub(super) cert_serials: Mutex<Vec<String>>,
    /// When the device last connected, sent or answered something (Unix ms; 0: never).
    pub(super) last_activity_ms: AtomicI64,
    /// When its connection state last changed (Unix ms; 0: never).
    pub(super) state_changed_ms: AtomicI64,
}

impl DeviceCounters {
    pub(super) fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// Unix time in milliseconds.
pub(super) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// A device's live connection.
pub(super) struct LiveEntry {
    pub(super) conn_id: u64,
    /// Cancelled to drop the connection.
    pub(super) dropped: CancellationToken,
    pub(super) outbox: Arc<Outbox>,
}

/// What happened on the service side (twins, methods, queries), for [`super::HubStats`].
#[derive(Debug, Default)]
pub(super) struct ServiceCounters {
    pub(super) methods_invoked: AtomicU64,
    pub(super) methods_answered: AtomicU64,
    pub(super) methods_timed_out: AtomicU64,
    pub(super) methods_offline: AtomicU64,
    /// Device answers the hub could not pass on (payload not JSON, bad status, too large).
    pub(super) method_responses_malformed: AtomicU64,
    /// Device answers for no waiting call (unknown, late or another device's `$rid`).
    pub(super) method_responses_unmatched: AtomicU64,
    pub(super) desired_pushed: AtomicU64,
    /// Desired notifications or method requests not delivered: the connection's outbox was full.
    pub(super) pushes_dropped: AtomicU64,
    pub(super) twin_reads: AtomicU64,
    pub(super) twin_updates: AtomicU64,
    pub(super) queries: AtomicU64,
    /// Queries refused with 400 (syntax, paging headers).
    pub(super) queries_invalid: AtomicU64,
    /// Requests refused for IoT Hub's size limits (method payloads, twin sections).
    pub(super) too_large: AtomicU64,
    /// Twin updates refused as malformed (not JSON, not an object, invalid keys, too deep).
    pub(super) invalid_updates: AtomicU64,
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the hub stored of a telemetry message.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
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

pub(super) struct Trust {
    pub(super) roots: Vec<CertificateDer<'static>>,
    pub(super) verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// CA certificates uploaded through the management API, by name (see `admin`).
    pub(super) certificates: HashMap<String, CaRecord>,
}

/// An uploaded CA certificate and where its proof of possession stands.
#[derive(Clone)]
pub(super) struct CaRecord {
    pub(super) der: CertificateDer<'static>,
    pub(super) verified: bool,
    /// The verification code handed out and not yet answered.
    pub(super) code: Option<String>,
    pub(super) etag: String,
}

impl HubState {
    /// The uploaded CA certificate named `name`.
    pub(super) fn trust_record(&self, name: &str) -> Option<CaRecord> {
        crate::sync::read(&self.trust)
            .certificates
            .get(name)
            .cloned()
    }
}

pub(super) struct HubState {
    pub(super) host_name: String,
    pub(super) disabled_connack: ConnectReturnCode,
    pub(super) policy_name: String,
    pub(super) policy_key: String,
    pub(super) devices: Mutex<HashMap<String, Device>>,
    pub(super) counters: Mutex<HashMap<String, Arc<DeviceCounters>>>,
    pub(super) trust: RwLock<Trust>,
    /// The live connection of each device, so a new one (or disabling the device) can drop it
    /// and the REST side can push to it.
    pub(super) live: Mutex<HashMap<String, LiveEntry>>,
    /// Woken when a device subscribes to direct methods (calls waiting to connect recheck).
    pub(super) presence: tokio::sync::Notify,
    pub(super) methods: Pending,
    pub(super) service: ServiceCounters,
    pub(super) next_connection: AtomicU64,
    pub(super) etag_counter: AtomicU64,
    /// Azure AD stand-in for service calls in emulator mode.
    pub(super) tokens: TokenAuthority,
    pub(super) twins: Mutex<HashMap<String, Twin>>,
    pub(super) throttles: Throttles,
    /// Where registry changes go in a resumable soak.
    pub(super) journal: std::sync::OnceLock<Arc<dyn crate::emulator::persist::Journal>>,
    /// What the hub's accept loops (MQTT, WebSocket, registry) saw.
    pub(super) listeners: Arc<ListenerCounters>,
    /// Every accepted telemetry message, for the Event Hub-compatible endpoint.
    pub(super) events: Arc<crate::emulator::amqp::EventLog>,
    /// Cloud-to-device messages waiting for their devices (filled by the AMQP endpoint).
    pub(super) c2d: Arc<crate::emulator::amqp::C2dQueues>,
    /// Devices whose C2D subscription outlives their connection (made on a CleanSession 0
    /// connection): their queued messages flow as soon as they reconnect with CleanSession 0.
    pub(super) c2d_sessions: Mutex<std::collections::HashSet<String>>,
    /// What a scenario's `faults:` switched on (see [`crate::emulator::faults`]).
    pub(super) faults: crate::emulator::faults::HubFaults,
}

impl HubState {
    /// Journals the registry entry of `id` as it is now.
    pub(super) fn journal_device(&self, id: &str) {
        if let Some(j) = self.journal.get() {
            let device = lock(&self.devices).get(id).cloned().map(Box::new);
            j.record(crate::emulator::persist::JournalEvent::HubDevice {
                id: id.to_string(),
                device,
            });
        }
    }

    pub(super) fn counters(&self, device_id: &str) -> Arc<DeviceCounters> {
        let mut map = lock(&self.counters);
        map.entry(device_id.to_string()).or_default().clone()
    }

    /// Drops the device's live connection, if any.
    pub(super) fn drop_connection(&self, device_id: &str) {
        if let Some(entry) = lock(&self.live).remove(device_id) {
            entry.dropped.cancel();
        }
    }

    /// The outbox of the device's live connection, if it has one.
    pub(super) fn outbox(&self, device_id: &str) -> Option<Arc<Outbox>> {
        lock(&self.live).get(device_id).map(|e| e.outbox.clone())
    }

    /// `device` as the registry REST API shows it: its connection state and times filled in.
    pub(super) fn device_view(&self, device: &Device) -> Device {
        let connected = lock(&self.live).contains_key(&device.device_id);
        let counters = lock(&self.counters).get(&device.device_id).cloned();
        let mut view = with_presence(device.clone(), connected, counters.as_deref());
        view.cloud_to_device_message_count = self.c2d.pending(&device.device_id) as u64;
        view
    }

    /// [`HubState::device_view`] of many devices, taking each lock once.
    pub(super) fn device_views(&self, devices: Vec<Device>) -> Vec<Device> {
        let live: std::collections::HashSet<String> = lock(&self.live).keys().cloned().collect();
        let counters = lock(&self.counters).clone();
        devices
            .into_iter()
            .map(|d| {
                let connected = live.contains(&d.device_id);
                let c = counters.get(&d.device_id).cloned();
                let pending = self.c2d.pending(&d.device_id) as u64;
                let mut view = with_presence(d, connected, c.as_deref());
                view.cloud_to_device_message_count = pending;
                view
            })
            .collect()
    }
}

fn with_presence(mut device: Device, connected: bool, counters: Option<&DeviceCounters>) -> Device {
    device.connection_state = if connected {
        "Connected"
    } else {
        "Disconnected"
    }
    .into();
    let time = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(iso8601)
    };
    if let Some(c) = counters {
        let changed = c.state_changed_ms.load(Ordering::Relaxed);
        if let Some(t) = (changed > 0).then(|| time(changed)).flatten() {
            device.connection_state_updated_time = t;
        }
        let active = c.last_activity_ms.load(Ordering::Relaxed);
        if let Some(t) = (active > 0).then(|| time(active)).flatten() {
            device.last_activity_time = t;
        }
    }
    device
}
