//! The embedded EZCA emulator: HTTPS on loopback, the management endpoints the IoT samples call
//! (`GetAvailableSSLCAs`, `RegisterNewDomain`, `RequestSSLCertificate`) with EZCA's exact JSON
//! names and wrapping, bearer tokens required, CSR signatures verified, and the issuing CA's
//! certificate served at the AIA URL written into every leaf.
//!
//! Two issuing CAs (ECDSA P-256 and RSA-2048, see [`authority`]) sit under one root, as a tenant
//! with several SSL CAs; requests name theirs by CaID/TemplateID and renewals stay with the CA that
//! issued the certificate.
//!
//! State lives in memory: domains with their owners and requesters, and every certificate issued
//! (by upper-case SHA-1 thumbprint), so tests can check what was issued. Revocations are listed in
//! the issuing CA's CRL, served at the distribution point written into every leaf.

mod authority;
pub mod capacity;
mod certificates;
mod renew;
mod routes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

pub use super::token::{Caller, TokenAuthority};
pub use authority::{Authority, IssuingKey, Refusal, SignRequest};

use super::EmulatorError;
use super::listener::{Listener, ListenerCounters, ListenerStats};
use super::tls::{ServerPki, https_config, serve_https};
use crate::clock::Clock;
use crate::sync::lock;

/// What the CA calls with the device id (CN) of each certificate it revokes. The CA knows no hub:
/// whoever assembles the emulators decides what a revocation does to the registry.
pub type RevocationHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub clock: Clock,
    pub max_cert_life_days: u32,
    /// How fast the CA issues (unlimited by default).
    pub capacity: capacity::CapacityConfig,
    /// The CA's DomainRestrictions: names that may be registered (a name or any name under it);
    /// empty allows all.
    pub allowed_domains: Vec<String>,
    /// EZCA's "disable device on revoke" (one-click trust with IoT Hub): revoking a certificate
    /// disables its device in the hub, which drops it and refuses it from then on.
    pub disable_devices_on_revoke: bool,
}

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
    /// Index of the issuing CA in [`CaState::authorities`]: renewals are signed by the same CA.
    pub ca: usize,
    pub subject_cn: String,
    pub requested_by: String,
    pub revoked: bool,
}

pub(crate) struct CaState {
    /// The issuing CAs, all under one root; requests name theirs by CaID and TemplateID.
    pub(crate) authorities: Vec<Authority>,
    pub(crate) tokens: TokenAuthority,
    pub(crate) domains: Mutex<HashMap<String, Domain>>,
    pub(crate) issued: Mutex<HashMap<String, IssuedRecord>>,
    /// `jti`s of certificate-JWTs already used, with their expiry, to refuse replays.
    pub(crate) seen_jti: Mutex<HashMap<String, u64>>,
    pub(crate) capacity: capacity::Capacity,
    pub(crate) allowed_domains: Vec<String>,
    /// Issuing CA, serial and time of every revocation, for the CRLs.
    pub(crate) revocations: Mutex<Vec<(usize, Vec<u8>, time::OffsetDateTime)>>,
    /// With "disable device on revoke" (EZCA's one-click trust option): told the device id of
    /// every revoked certificate, so the hub's registry can disable it.
    pub(crate) on_revoke: std::sync::OnceLock<RevocationHook>,
    /// Where durable changes go in a resumable soak.
    pub(crate) journal: std::sync::OnceLock<Arc<dyn super::persist::Journal>>,
    /// What its accept loop saw (refused handshakes and the like).
    pub(crate) listeners: Arc<ListenerCounters>,
}

impl CaState {
    pub(crate) fn journal(&self, event: super::persist::JournalEvent) {
        if let Some(j) = self.journal.get() {
            j.record(event);
        }
    }

    /// The issuing CA a request names (CaID and TemplateID, any case), with its index.
    pub(crate) fn authority(
        &self,
        ca_id: Option<&str>,
        template_id: Option<&str>,
    ) -> Result<(usize, &Authority), String> {
        let same =
            |got: Option<&str>, want: &str| got.is_some_and(|g| g.eq_ignore_ascii_case(want));
        self.authorities
            .iter()
            .enumerate()
            .find(|(_, a)| same(ca_id, &a.ca_id) && same(template_id, &a.template_id))
            .ok_or_else(|| "CA or template not found".to_string())
    }

    /// The issuing CA of a certificate this emulator issued.
    pub(crate) fn authority_of(&self, record: &IssuedRecord) -> &Authority {
        // Records only ever carry indices of `authorities`, which never shrinks.
        &self.authorities[record.ca.min(self.authorities.len() - 1)]
    }
}

fn revoke(state: &CaState, thumbprint: &str) -> bool {
    let mut issued = lock(&state.issued);
    let Some(record) = issued.get_mut(&thumbprint.to_ascii_uppercase()) else {
        return false;
    };
    if !record.revoked {
        record.revoked = true;
        let now = time::OffsetDateTime::now_utc();
        if let Some(serial) = serial_bytes(&record.der) {
            let mut revocations = lock(&state.revocations);
            revocations.push((record.ca, serial, now));
        }
        state.journal(super::persist::JournalEvent::Revoked {
            thumbprint: thumbprint.to_ascii_uppercase(),
            at: now.unix_timestamp(),
        });
    }
    let device = record.subject_cn.clone();
    drop(issued);
    // The device id is the certificate's CN (the IoT Hub rule), so that is the identity to disable.
    if let Some(hook) = state.on_revoke.get() {
        hook(&device);
    }
    true
}

fn serial_bytes(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.tbs_certificate.raw_serial().to_vec())
}

/// A running (or ready to run) CA emulator. Cheap to clone.
#[derive(Clone)]
pub struct CaEmulator {
    state: Arc<CaState>,
    url: String,
}

impl CaEmulator {
    /// Creates the emulator for `listener`, whose address becomes its public URL.
    pub fn new(listener: &TcpListener, config: &CaConfig) -> Result<Self, EmulatorError> {
        Self::restored(listener, config, None)
    }

    /// Like [`CaEmulator::new`], with the identity of a CA saved earlier (resumed soaks).
    pub fn restored(
        listener: &TcpListener,
        config: &CaConfig,
        identity: Option<&super::persist::CaIdentity>,
    ) -> Result<Self, EmulatorError> {
        let addr = listener.local_addr()?;
        let url = format!("https://{addr}/");
        // A resumed soak restores the one issuing CA its devices used (the default, ECDSA one).
        let authorities = match identity {
            Some(id) => vec![Authority::restore(
                id,
                config.max_cert_life_days,
                &url,
                config.clock,
            )?],
            None => Authority::hierarchy(
                "fleetsim EZCA",
                config.max_cert_life_days,
                &url,
                config.clock,
            )?,
        };
        let tokens = TokenAuthority::new(super::token::EZCA_AUDIENCE)
            .map_err(|_| EmulatorError::Setup("no randomness for the token key".into()))?;
        Ok(Self {
            state: Arc::new(CaState {
                authorities,
                tokens,
                domains: Mutex::new(HashMap::new()),
                issued: Mutex::new(HashMap::new()),
                seen_jti: Mutex::new(HashMap::new()),
                capacity: capacity::Capacity::new(config.capacity),
                revocations: Mutex::new(Vec::new()),
                on_revoke: std::sync::OnceLock::new(),
                journal: std::sync::OnceLock::new(),
                listeners: Arc::default(),
                allowed_domains: config
                    .allowed_domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect(),
            }),
            url,
        })
    }

    /// Serves HTTPS on `listener` with a server certificate from `pki` until `shutdown`.
    pub fn serve(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let addr = listener.local_addr()?;
        let identity = pki.issue_server(&[addr.ip().to_string(), "localhost".into()])?;
        let listener =
            Listener::new(listener, https_config(identity)?).counting(self.state.listeners.clone());
        let router = routes::router(self.state.clone());
        Ok(tokio::spawn(serve_https(listener, router, shutdown)))
    }

    /// What the CA's accept loop saw: connections, failed TLS handshakes, accept errors.
    pub fn listener_stats(&self) -> ListenerStats {
        self.state.listeners.snapshot()
    }

    /// Sends every durable change to `journal` from now on (set once).
    pub fn set_journal(&self, journal: Arc<dyn super::persist::Journal>) {
        let _ = self.state.journal.set(journal);
    }

    /// The default (ECDSA) issuing CA's identity, to restore it after a restart: a resumed
    /// soak's devices hold certificates of that CA (`--state` requires `issuing_ca: ecdsa`).
    pub fn identity(&self) -> super::persist::CaIdentity {
        self.state.authorities[0].identity()
    }

    /// Seeds a restarted CA with the certificates and domains it had.
    pub fn restore(&self, issued: &[IssuedRecord], domains: &[(String, Domain)]) {
        let mut map = lock(&self.state.issued);
        let mut revocations = lock(&self.state.revocations);
        for r in issued {
            if r.revoked
                && let Some(serial) = serial_bytes(&r.der)
            {
                revocations.push((r.ca, serial, time::OffsetDateTime::now_utc()));
            }
            map.insert(crate::crypto::sha1_thumbprint(&r.der), r.clone());
        }
        let mut d = lock(&self.state.domains);
        for (name, domain) in domains {
            d.insert(name.clone(), domain.clone());
        }
    }

    /// Base URL ending in `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An Azure AD-style bearer token for the caller `oid`, valid for `lifetime_secs`.
    pub fn mint_token(&self, oid: &str, upn: &str, lifetime_secs: u64) -> String {
        self.state.tokens.mint(oid, upn, lifetime_secs)
    }

    /// The root CA that devices' certificates chain to: what a hub must trust.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.state.authorities[0].root_der.clone()
    }

    /// The default (ECDSA) issuing CA's certificate.
    pub fn issuing_der(&self) -> CertificateDer<'static> {
        self.state.authorities[0].issuing_der.clone()
    }

    /// The CaID of the issuing CA with `key`.
    pub fn ca_id(&self, key: IssuingKey) -> Option<String> {
        self.state
            .authorities
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.ca_id.clone())
    }

    /// Every certificate issued so far.
    pub fn issued(&self) -> Vec<IssuedRecord> {
        lock(&self.state.issued).values().cloned().collect()
    }

    /// How many certificates have been issued (renewals included), without copying them.
    pub fn issued_count(&self) -> usize {
        lock(&self.state.issued).len()
    }

    /// Marks a certificate (by SHA-1 thumbprint, any case) revoked; false if unknown.
    pub fn revoke(&self, thumbprint: &str) -> bool {
        revoke(&self.state, thumbprint)
    }

    /// From now on, revoking a certificate calls `hook` with its device id (the certificate's
    /// CN): EZCA's one-click trust with "disable device on revoke" disables that device in the
    /// hub. Set once; later hooks are ignored.
    pub fn on_revoke(&self, hook: RevocationHook) {
        let _ = self.state.on_revoke.set(hook);
    }

    /// Whether the certificate with this thumbprint is revoked (`None`: not issued here).
    pub fn is_revoked(&self, thumbprint: &str) -> Option<bool> {
        let issued = lock(&self.state.issued);
        issued
            .get(&thumbprint.to_ascii_uppercase())
            .map(|r| r.revoked)
    }

    pub fn domain(&self, name: &str) -> Option<Domain> {
        lock(&self.state.domains)
            .get(&name.to_ascii_lowercase())
            .cloned()
    }
}
