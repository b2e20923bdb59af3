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
//! and the plain records it keeps (`Domain`, defined with the journal in [`super::persist`], and
//! [`IssuedCertificate`]); this file builds it and serves it. When a certificate is revoked the CA
//! calls its [`RevocationHook`]: it knows nothing of the hub.
//!
//! A request's `SubjectName` and SANs are parsed once ([`names`], over the RFC 4514 reader in
//! `rfc4514`) into the form both the ownership check and the certificate builder read: the one CN
//! and every SAN (DNS, e-mail, URI, IP) must be names the caller owns or may request for, and the
//! certificate carries exactly those. Subjects and SANs are held to the template's sizes.
//!
//! State lives in memory: domains with their owners and requesters, and what revocation, renewal
//! and the CRL need of every certificate issued (by upper-case SHA-1 thumbprint; not the
//! certificate itself, and a certificate long expired is forgotten, see `issued`), so tests can
//! check what was issued. Revocations are listed in the issuing CA's CRL, served at the
//! distribution point written into every leaf.

mod authority;
pub mod capacity;
mod certificates;
mod issued;
pub mod names;
mod renew;
mod rfc4514;
mod routes;
mod state;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

pub use super::persist::{Domain, IssuedRecord};
pub use super::token::{Caller, TokenAuthority};
pub use authority::{Authority, IssuingKey, SignRequest};
pub use issued::IssuedCertificate;
pub use names::Refusal;
pub use state::RevocationHook;

use super::error::EmulatorError;
use super::http::HttpLimits;
use super::listener::ListenerStats;
use super::tls::{ServerPki, spawn_https_with};
use crate::clock::Clock;
use crate::sync::lock;
use state::{CaState, Revocation, revoke};

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
        let saved = super::persist::CaSecrets {
            authorities: identity.into_iter().cloned().collect(),
            token_secret: None,
        };
        Self::from_saved(listener, config, &saved)
    }

    /// Like [`CaEmulator::new`], with the issuing CAs and token key saved earlier (`fleetsim
    /// emulate --state`): what it issued chains to the same roots and its tokens stay valid.
    /// New ones are made for what `saved` lacks.
    pub fn from_saved(
        listener: &TcpListener,
        config: &CaConfig,
        saved: &super::persist::CaSecrets,
    ) -> Result<Self, EmulatorError> {
        let addr = listener.local_addr()?;
        let url = format!("https://{addr}/");
        let authorities = match saved.authorities.is_empty() {
            false => saved
                .authorities
                .iter()
                .map(|id| Authority::restore(id, config.max_cert_life_days, &url, config.clock))
                .collect::<Result<Vec<_>, _>>()?,
            true => Authority::hierarchy(
                "fleetsim EZCA",
                config.max_cert_life_days,
                &url,
                config.clock,
            )?,
        };
        let tokens = match saved.token_secret {
            Some(secret) => TokenAuthority::with_secret(super::token::EZCA_AUDIENCE, secret),
            None => TokenAuthority::new(super::token::EZCA_AUDIENCE)
                .map_err(|_| EmulatorError::Setup("no randomness for the token key".into()))?,
        };
        Ok(Self {
            state: Arc::new(CaState {
                authorities,
                tokens,
                domains: Mutex::new(HashMap::new()),
                issued: Mutex::new(issued::IssuedBook::default()),
                retention: issued::retention(config.clock),
                seen_jti: Mutex::new(HashMap::new()),
                capacity: capacity::Capacity::new(config.capacity),
                revocations: Mutex::new(Vec::new()),
                crl_number: Default::default(),
                on_revoke: std::sync::OnceLock::new(),
                journal: std::sync::OnceLock::new(),
                listeners: Arc::default(),
                unavailable: Default::default(),
                allowed_domains: config
                    .allowed_domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect(),
            }),
            url,
        })
    }

    /// What [`CaEmulator::from_saved`] restores: every issuing CA and the token key (secret).
    pub fn secrets(&self) -> super::persist::CaSecrets {
        super::persist::CaSecrets {
            authorities: self
                .state
                .authorities
                .iter()
                .map(Authority::identity)
                .collect(),
            token_secret: Some(self.state.tokens.secret()),
        }
    }

    /// Serves HTTPS on `listener` with a server certificate from `pki` until `shutdown`, under
    /// the default [`HttpLimits`].
    pub fn serve(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_with(listener, pki, HttpLimits::default(), shutdown)
    }

    /// Like [`CaEmulator::serve`], with `limits` (timeouts, header size, connection cap); every
    /// request but the public certificates and CRLs is authenticated before its body is read.
    pub fn serve_with(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        limits: HttpLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let counters = self.state.listeners.clone();
        let router = routes::router(self.state.clone());
        let options = routes::http_options(self.state.clone(), limits);
        spawn_https_with(
            listener,
            pki,
            &["localhost"],
            counters,
            router,
            options,
            shutdown,
        )
    }

    /// Answers every request 503 for `lasting` (a scenario's `ca_unavailable` fault).
    pub fn unavailable_for(&self, lasting: std::time::Duration) {
        self.state.unavailable.open_for(lasting);
    }

    /// What the CA's accept loop saw: connections, failed TLS handshakes, accept errors.
    pub fn listener_stats(&self) -> ListenerStats {
        self.state.listeners.snapshot()
    }

    /// Sends every durable change to `journal` from now on (set once).
    pub fn set_journal(&self, journal: Arc<dyn super::persist::Journal>) {
        let _ = self.state.journal.set(journal);
    }

    /// The default (ECDSA) issuing CA's identity, to restore it after a restart.
    pub fn identity(&self) -> super::persist::CaIdentity {
        self.state.authorities[0].identity()
    }

    /// The identity of the issuing CA with `key` (what a resumed soak's devices hold
    /// certificates of), or the default one if there is none with that key.
    pub fn identity_of(&self, key: IssuingKey) -> super::persist::CaIdentity {
        let authorities = &self.state.authorities;
        authorities
            .iter()
            .find(|a| a.key == key)
            .unwrap_or(&authorities[0])
            .identity()
    }

    /// Seeds a restarted CA with the certificates and domains it had (certificates that do not
    /// parse, or expired long ago, are skipped).
    pub fn restore(&self, issued: &[IssuedRecord], domains: &[(String, Domain)]) {
        let mut book = lock(&self.state.issued);
        let mut revocations = lock(&self.state.revocations);
        let subjects: Vec<Option<Vec<u8>>> = self
            .state
            .authorities
            .iter()
            .map(|a| raw_name(&a.issuing_der, false))
            .collect();
        for r in issued {
            // The CA that signed it is the one whose subject is its issuer (the record's index
            // is only a fallback: a resumed soak restores one CA).
            let issuer = raw_name(&r.der, true);
            let ca = subjects
                .iter()
                .position(|s| s.is_some() && *s == issuer)
                .unwrap_or(r.ca);
            let Some(cert) = IssuedCertificate::from_der(&r.der, ca, &r.requested_by, r.revoked)
            else {
                tracing::warn!(subject = %r.subject_cn, "a stored certificate does not parse: skipped");
                continue;
            };
            if cert.revoked {
                revocations.push(Revocation {
                    ca: cert.ca,
                    serial: cert.serial.clone(),
                    at: time::OffsetDateTime::now_utc(),
                    not_after: cert.not_after,
                });
            }
            book.insert(cert, self.state.retention);
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

    /// Every certificate issued so far and not long expired (see [`issued::retention`]).
    pub fn issued(&self) -> Vec<IssuedCertificate> {
        lock(&self.state.issued).values().cloned().collect()
    }

    /// How many certificates the CA remembers (renewals included), without copying them.
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

/// The raw DER of a certificate's issuer (`issuer`) or subject name.
fn raw_name(der: &[u8], issuer: bool) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = match issuer {
        true => cert.issuer(),
        false => cert.subject(),
    };
    Some(name.as_raw().to_vec())
}
