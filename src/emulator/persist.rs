//! What the embedded emulators need to survive a restart of a resumed soak (`--state`): the CA's
//! identity (certificates and issuing key, ids), the certificates it issued, its domains and
//! revocations, and the hub's registry. The emulators report every durable change to a
//! [`Journal`] before they answer the request that caused it, and start from a [`Restore`].

use rustls_pki_types::CertificateDer;

use super::ca::records::{Domain, IssuedRecord};
use crate::iothub::registry::Device;

/// A durable change in an emulator.
#[derive(Debug, Clone)]
pub enum JournalEvent {
    Issued {
        subject_cn: String,
        requested_by: String,
        der: Vec<u8>,
    },
    Domain {
        name: String,
        domain: Domain,
    },
    Revoked {
        thumbprint: String,
        at: i64,
    },
    /// A hub registry entry was created or changed (`None`: deleted).
    HubDevice {
        id: String,
        device: Option<Box<Device>>,
    },
}

/// Where emulators report durable changes. Must not block: it only queues.
pub trait Journal: Send + Sync {
    fn record(&self, event: JournalEvent);
}

/// The durable identity of the CA. The issuing key is secret: not printed.
#[derive(Clone)]
pub struct CaIdentity {
    pub ca_id: String,
    pub template_id: String,
    pub root_der: CertificateDer<'static>,
    pub issuing_der: CertificateDer<'static>,
    pub issuing_key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for CaIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaIdentity({}, <private key>)", self.ca_id)
    }
}

/// What restarted emulators start from.
#[derive(Debug, Clone, Default)]
pub struct Restore {
    pub ca: Option<CaIdentity>,
    pub issued: Vec<IssuedRecord>,
    pub domains: Vec<(String, Domain)>,
    pub hub_devices: Vec<Device>,
}
