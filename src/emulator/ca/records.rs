//! What the CA keeps of its work: the domains registered with it and the certificates it issued.
//! Plain records, so the journal of a resumable soak ([`crate::emulator::persist`]) can carry them.

use rustls_pki_types::CertificateDer;

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
