//! What the DPS emulator's parts share: its settings, the hubs linked to it ([`LinkedHub`]), its
//! counters and its state (enrolments, records, throttles), which every request works on.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::matching::Enrollments;
use super::records::Registrations;
use super::throttle::{DpsLimits, Throttles};

/// The shared access policy of the service API (all rights).
pub const SERVICE_POLICY: &str = "provisioningserviceowner";

/// A hub linked to the provisioning service: where devices can be assigned.
pub trait LinkedHub: Send + Sync + 'static {
    /// The hub's host name, as devices are told in `assignedHub`.
    fn host_name(&self) -> &str;
    /// Creates `device_id` in the hub's registry with CA authentication, or makes an existing
    /// identity an enabled CA one. `Err` says why the hub refused.
    fn provision_device(&self, device_id: &str) -> Result<(), String>;
}

#[derive(Debug, Clone)]
pub struct DpsConfig {
    /// The service's host name: the name in service SAS tokens, and the name its device endpoint
    /// answers to (`global.azure-devices-provisioning.net` in Azure).
    pub host_name: String,
    /// The id scope devices put in their username; a random `0ne…` one when absent.
    pub id_scope: Option<String>,
    /// The `retry-after` DPS sends with 202 answers (3 s as observed).
    pub retry_after_secs: u64,
    /// How long an assignment takes after the register request.
    pub assignment_delay: Duration,
    pub limits: DpsLimits,
}

impl Default for DpsConfig {
    fn default() -> Self {
        Self {
            host_name: "fleetsim-dps.azure-devices-provisioning.net".into(),
            id_scope: None,
            retry_after_secs: 3,
            assignment_delay: Duration::from_millis(500),
            limits: DpsLimits::published(),
        }
    }
}

/// What the service has seen.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(super) connects: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) registrations: AtomicU64,
    pub(super) polls: AtomicU64,
    pub(super) assigned: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) disabled: AtomicU64,
    pub(super) unauthorized: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) protocol_errors: AtomicU64,
    pub(super) per_hub: Mutex<BTreeMap<String, u64>>,
}

pub(crate) struct DpsState {
    pub(super) config: DpsConfig,
    pub(super) id_scope: String,
    pub(super) policy_key: String,
    pub(super) hubs: RwLock<Vec<Arc<dyn LinkedHub>>>,
    /// CA certificates uploaded to the service, by name (`caReferences`).
    pub(super) certificates: RwLock<BTreeMap<String, CertificateDer<'static>>>,
    pub(super) enrollments: RwLock<Enrollments>,
    pub(super) registrations: Mutex<Registrations>,
    pub(super) throttles: Throttles,
    pub(super) counters: Counters,
    /// The accept loops' counts (handshakes failed, accept errors) of every DPS listener.
    pub(super) listeners: Arc<crate::emulator::listener::ListenerCounters>,
}
