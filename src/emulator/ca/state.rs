//! The CA emulator's shared state, which its request handlers work on: the issuing CAs, tokens,
//! domains, issued certificates, revocations, the capacity model, and where revocations and
//! durable changes go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::authority::Authority;
use super::capacity::Capacity;
use crate::emulator::listener::ListenerCounters;
use crate::emulator::persist::{Domain, IssuedRecord};
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
    pub(crate) issued: Mutex<HashMap<String, IssuedRecord>>,
    /// `jti`s of certificate-JWTs already used, with their expiry, to refuse replays.
    pub(crate) seen_jti: Mutex<HashMap<String, u64>>,
    pub(crate) capacity: Capacity,
    pub(crate) allowed_domains: Vec<String>,
    /// Issuing CA, serial and time of every revocation, for the CRLs.
    pub(crate) revocations: Mutex<Vec<(usize, Vec<u8>, time::OffsetDateTime)>>,
    /// With "disable device on revoke" (EZCA's one-click trust option): told the device id of
    /// every revoked certificate, so the hub's registry can disable it.
    pub(crate) on_revoke: std::sync::OnceLock<RevocationHook>,
    /// Where durable changes go in a resumable soak.
    pub(crate) journal: std::sync::OnceLock<Arc<dyn crate::emulator::persist::Journal>>,
    /// What its accept loop saw (refused handshakes and the like).
    pub(crate) listeners: Arc<ListenerCounters>,
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
    pub(crate) fn authority_of(&self, record: &IssuedRecord) -> &Authority {
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
        if let Some(serial) = serial_bytes(&record.der) {
            let mut revocations = lock(&state.revocations);
            revocations.push((record.ca, serial, now));
        }
        state.journal(crate::emulator::persist::JournalEvent::Revoked {
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

/// The raw serial of a DER certificate, as CRLs list it.
pub(super) fn serial_bytes(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.tbs_certificate.raw_serial().to_vec())
}
