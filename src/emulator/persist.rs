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

/// A certificate the emulator issued, as a resumed soak stores it (with its DER; the running CA
/// keeps less, see [`crate::emulator::ca::IssuedCertificate`]).
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

/// Where emulators report durable changes. Must not block for long: it queues (a resumed
/// soak's SQLite writer) or appends one line (`fleetsim emulate --state`).
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

/// What `fleetsim emulate --state` restores of the CA besides its records: every issuing CA
/// (the ECDSA and the RSA one) and the key of its Azure AD stand-in tokens. Secret.
#[derive(Clone, Default)]
pub struct CaSecrets {
    pub authorities: Vec<CaIdentity>,
    pub token_secret: Option<[u8; 32]>,
}

impl std::fmt::Debug for CaSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaSecrets({} CAs, <keys>)", self.authorities.len())
    }
}

/// What `fleetsim emulate --state` restores of the hub: the `iothubowner` policy key (base64)
/// and the key of its Azure AD stand-in tokens. Secret.
#[derive(Clone)]
pub struct HubSecrets {
    pub policy_key: String,
    pub token_secret: [u8; 32],
}

impl std::fmt::Debug for HubSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubSecrets(<keys>)")
    }
}

/// What restarted emulators start from.
#[derive(Debug, Clone, Default)]
pub struct Restore {
    /// The default issuing CA (a resumed soak); `ca_secrets`, when given, restores all of them.
    pub ca: Option<CaIdentity>,
    /// Every issuing CA and the token key (`fleetsim emulate --state`).
    pub ca_secrets: Option<CaSecrets>,
    pub hub_secrets: Option<HubSecrets>,
    pub issued: Vec<IssuedRecord>,
    pub domains: Vec<(String, Domain)>,
    pub hub_devices: Vec<Device>,
}
