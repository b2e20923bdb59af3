//! The CA emulator's shared state, which its request handlers work on: the issuing CAs, tokens,
//! domains, issued certificates, revocations, the capacity model, and where revocations and
//! durable changes go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::authority::Authority;
use super::capacity::Capacity;
use super::issued::{IssuedBook, IssuedCertificate};
use crate::emulator::listener::ListenerCounters;
use crate::emulator::persist::Domain;
use crate::emulator::token::TokenAuthority;
use crate::sync::lock;

/// What the CA calls with the device id (CN) of each certificate it revokes. The CA knows no hub:
/// whoever assembles the emulators decides what a revocation does to the registry.
pub type RevocationHook = Arc<dyn Fn(&str) + Send + Sync>;

pub(crate) struct CaState {
    /// The issuing CAs, all under one root; requests name theirs by CaID and TemplateID.
    pub(crate) authorities: Vec<Authority>,
    pub(crate) tokens: TokenAuthority,
    pub(crate) domains: Mutex<HashMap<String, Domain>>,
    pub(crate) issued: Mutex<IssuedBook>,
    /// How long expired certificates are remembered ([`super::issued::retention`]).
    pub(crate) retention: std::time::Duration,
    /// `jti`s of certificate-JWTs already used, with their expiry, to refuse replays.
    pub(crate) seen_jti: Mutex<HashMap<String, u64>>,
    pub(crate) capacity: Capacity,
    pub(crate) allowed_domains: Vec<String>,
    /// Every revocation of a certificate not long expired, for the CRLs.
    pub(crate) revocations: Mutex<Vec<Revocation>>,
    /// The last CRL number given out.
    pub(crate) crl_number: std::sync::atomic::AtomicU64,
    /// With "disable device on revoke" (EZCA's one-click trust option): told the device id of
    /// every revoked certificate, so the hub's registry can disable it.
    pub(crate) on_revoke: std::sync::OnceLock<RevocationHook>,
    /// Where durable changes go in a resumable soak.
    pub(crate) journal: std::sync::OnceLock<Arc<dyn crate::emulator::persist::Journal>>,
    /// What its accept loop saw (refused handshakes and the like).
    pub(crate) listeners: Arc<ListenerCounters>,
    /// A scenario's ca_unavailable fault: every request is answered 503 while it is open.
    pub(crate) unavailable: crate::emulator::faults::Window,
}

/// A revoked certificate as its CA's CRL lists it.
#[derive(Debug, Clone)]
pub(crate) struct Revocation {
    pub(crate) ca: usize,
    pub(crate) serial: Vec<u8>,
    pub(crate) at: time::OffsetDateTime,
    /// When the certificate expires: from then on (plus the retention) the CRL may drop it.
    pub(crate) not_after: time::OffsetDateTime,
}

impl CaState {
    pub(crate) fn journal(&self, event: crate::emulator::persist::JournalEvent) {
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
    pub(crate) fn authority_of(&self, record: &IssuedCertificate) -> &Authority {
        // Records only ever carry indices of `authorities`, which never shrinks.
        &self.authorities[record.ca.min(self.authorities.len() - 1)]
    }
}

/// Marks a certificate revoked (listed in its CA's CRL from now on, journaled) and tells the
/// revocation hook its device id; false if the thumbprint is unknown.
pub(super) fn revoke(state: &CaState, thumbprint: &str) -> bool {
    let mut issued = lock(&state.issued);
    let Some(record) = issued.get_mut(&thumbprint.to_ascii_uppercase()) else {
        return false;
    };
    if !record.revoked {
        record.revoked = true;
        let now = time::OffsetDateTime::now_utc();
        lock(&state.revocations).push(Revocation {
            ca: record.ca,
            serial: record.serial.clone(),
            at: now,
            not_after: record.not_after,
        });
        state.journal(crate::emulator::persist::JournalEvent::Revoked {
            thumbprint: thumbprint.to_ascii_uppercase(),
            at: now.unix_timestamp(),
        });
    }
    let device = record.subject_cn().to_string();
    drop(issued);
    // The device id is the certificate's CN (the IoT Hub rule), so that is the identity to disable.
    if let Some(hook) = state.on_revoke.get() {
        hook(&device);
    }
    true
}

/// The revocations `ca`'s CRL lists now (serial, time); revocations of certificates expired for
/// longer than the retention are dropped for good.
pub(super) fn crl_entries(state: &CaState, ca: usize) -> Vec<(Vec<u8>, time::OffsetDateTime)> {
    let cutoff = time::OffsetDateTime::now_utc() - state.retention;
    let mut revocations = lock(&state.revocations);
    revocations.retain(|r| r.not_after >= cutoff);
    revocations
        .iter()
        .filter(|r| r.ca == ca)
        .map(|r| (r.serial.clone(), r.at))
        .collect()
}

/// A CRL number above every one given out before, even by this CA before a restart: the time
/// in microseconds, or one more than the last number if that is later (RFC 5280 §5.2.3 wants
/// them increasing; entries dropped from the list must not make it go down).
pub(super) fn next_crl_number(state: &CaState) -> u64 {
    use std::sync::atomic::Ordering;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    let now = u64::try_from(now).unwrap_or(0);
    let previous = state.crl_number.fetch_max(now, Ordering::Relaxed);
    if previous >= now {
        state.crl_number.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        now
    }
}
