//! What the embedded emulators need to survive a restart of a resumed soak (`--state`): the CA's
//! identity (certificates and issuing key, ids), the certificates it issued and its domains (the
//! CA's own records, defined here so this file imports neither emulator), its revocations, and
//! the hub's registry. The emulators report every durable change to a
//! [`Journal`] before they answer the request that caused it, and start from a [`Restore`].

use rustls_pki_types::CertificateDer;

use crate::iothub::registry::Device;

/// A domain registered with `RegisterNewDomain`.
#[derive(Debug, Clone)]
pub struct Domain {
    /// `DomainID` as GetMyDomains reports it.
    pub id: String,
    /// The issuing CA it was registered with (index into the CA list). Names are one namespace
    /// across the emulator's CAs: a device id registered with one CA may be requested from any.
    pub ca: usize,
    pub owners: Vec<String>,
    pub requesters: Vec<String>,
}

/// A certificate the emulator issued.
#[derive(Debug, Clone)]
pub struct IssuedRecord {
    pub der: CertificateDer<'static>,
    /// Index of the issuing CA in `CaState::authorities`: renewals are signed by the same CA.
    pub ca: usize,
    pub subject_cn: String,
    pub requested_by: String,
    pub revoked: bool,
}

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
