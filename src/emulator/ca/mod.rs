//! The embedded EZCA emulator: HTTPS on loopback, the management endpoints the IoT samples call
//! (`GetAvailableSSLCAs`, `RegisterNewDomain`, `RequestSSLCertificate`) with EZCA's exact JSON
//! names and wrapping, bearer tokens required, CSR signatures verified, and the issuing CA's
//! certificate served at the AIA URL written into every leaf.
//!
//! Two issuing CAs (ECDSA P-256 and RSA-2048, see `authority`) sit under one root, as a tenant
//! with several SSL CAs; requests name theirs by CaID/TemplateID and renewals stay with the CA that
//! issued the certificate.
//!
//! The request handlers (`routes`, `certificates`, `renew`) work on one `state::CaState`
//! and the plain records it keeps (`Domain`, `IssuedRecord`, defined with the journal in
//! [`super::persist`]); this file builds it and serves it. When a certificate is revoked
//! the CA calls its [`RevocationHook`]: it knows nothing of the hub.
//!
//! State lives in memory: domains with their owners and requesters, and every certificate issued
//! (by upper-case SHA-1 thumbprint), so tests can check what was issued. Revocations are listed in
//! the issuing CA's CRL, served at the distribution point written into every leaf.

mod authority;
pub mod capacity;
mod certificates;
mod renew;
mod routes;
mod state;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

pub use super::persist::{Domain, IssuedRecord};
pub use super::token::{Caller, TokenAuthority};
pub use authority::{Authority, IssuingKey, Refusal, SignRequest};
pub use state::RevocationHook;

use super::error::EmulatorError;
use super::listener::ListenerStats;
use super::tls::{ServerPki, spawn_https};
use crate::clock::Clock;
use crate::sync::lock;
use state::{CaState, revoke, serial_bytes};

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
        let counters = self.state.listeners.clone();
        let router = routes::router(self.state.clone());
        spawn_https(listener, pki, &["localhost"], counters, router, shutdown)
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
