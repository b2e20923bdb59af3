//! The hub emulator's shared state, which its endpoints work on: the registry, per-device
//! counters, trust, the live connection of each device, twins, throttles and the journal.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use rumqttc::mqttbytes::v4::ConnectReturnCode;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use super::throttle::Throttles;
use super::twin::Twin;
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
    pub(super) refused: AtomicU64,
    pub(super) drops: AtomicU64,
    pub(super) cert_serials: Mutex<Vec<String>>,
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
}

pub(super) struct HubState {
    pub(super) host_name: String,
    pub(super) disabled_connack: ConnectReturnCode,
    pub(super) policy_name: String,
    pub(super) policy_key: String,
    pub(super) devices: Mutex<HashMap<String, Device>>,
    pub(super) counters: Mutex<HashMap<String, Arc<DeviceCounters>>>,
    pub(super) trust: RwLock<Trust>,
    /// The live connection of each device, so a new one (or disabling the device) can drop it.
    pub(super) live: Mutex<HashMap<String, (u64, CancellationToken)>>,
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
        if let Some((_, token)) = lock(&self.live).remove(device_id) {
            token.cancel();
        }
    }
}
