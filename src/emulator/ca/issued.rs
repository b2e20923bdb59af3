//! What the CA keeps of each certificate it issued: what revocation, renewal and the CRL need
//! (thumbprint, serial, subject, SANs, public key, validity, requester, revoked), not the
//! certificate itself. The DER goes to the journal of a resumable soak (`--state`), on disk.
//!
//! Memory stays bounded by the certificates alive: a certificate expired for longer than
//! [`retention`] is forgotten. Renewal and revocation refuse expired certificates anyway, and
//! RFC 5280 §3.3 lets a CRL drop an entry once its certificate has expired.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::names::{San, Subject};
use crate::clock::Clock;

/// A certificate the CA issued, as it remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Upper-case hex SHA-1 of the DER: how EZCA names certificates.
    pub thumbprint: String,
    /// The raw serial, as CRLs list it.
    pub serial: Vec<u8>,
    /// Index of the issuing CA in `CaState::authorities`: renewals are signed by the same CA.
    pub ca: usize,
    pub subject: Subject,
    pub sans: Vec<San>,
    /// The DER SubjectPublicKeyInfo: certificate-JWTs naming this certificate verify with it.
    pub spki: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub requested_by: String,
    pub revoked: bool,
}

impl IssuedCertificate {
    /// The record of `der`, a certificate this CA issued; `None` if it does not parse or its
    /// subject is not one the template allows.
    pub fn from_der(der: &[u8], ca: usize, requested_by: &str, revoked: bool) -> Option<Self> {
        use x509_parser::extensions::ParsedExtension;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut sans = Vec::new();
        for ext in cert.extensions() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                sans.extend(san.general_names.iter().filter_map(San::from_general_name));
            }
        }
        Some(Self {
            thumbprint: crate::crypto::sha1_thumbprint(der),
            serial: tbs.raw_serial().to_vec(),
            ca,
            subject: Subject::from_x509(tbs.subject())?,
            sans,
            spki: tbs.subject_pki.raw.to_vec(),
            not_before: tbs.validity.not_before.to_datetime(),
            not_after: tbs.validity.not_after.to_datetime(),
            requested_by: requested_by.to_string(),
            revoked,
        })
    }

    /// The subject's common name: the device id.
    pub fn subject_cn(&self) -> &str {
        self.subject.common_name()
    }

    /// The DNS SANs, in order.
    pub fn dns_sans(&self) -> Vec<String> {
        self.sans
            .iter()
            .filter_map(|s| match s {
                San::Dns(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }
}

/// How long an expired certificate is remembered: thirty days of the CA's (possibly compressed)
/// time, at most ten minutes of real time.
pub fn retention(clock: Clock) -> Duration {
    clock.days(30.0).min(Duration::from_secs(600))
}

/// The book's size below which it is never swept.
const SWEEP_FLOOR: usize = 256;

/// The issued certificates by thumbprint, pruned of long-expired ones as it grows.
#[derive(Debug, Default)]
pub(crate) struct IssuedBook {
    by_thumbprint: HashMap<String, IssuedCertificate>,
    /// The size after the last sweep: the next one comes once it has grown by half.
    swept_at: usize,
}

impl IssuedBook {
    pub fn get(&self, thumbprint: &str) -> Option<&IssuedCertificate> {
        self.by_thumbprint.get(thumbprint)
    }

    pub fn get_mut(&mut self, thumbprint: &str) -> Option<&mut IssuedCertificate> {
        self.by_thumbprint.get_mut(thumbprint)
    }

    pub fn len(&self) -> usize {
        self.by_thumbprint.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &IssuedCertificate> {
        self.by_thumbprint.values()
    }

    /// Adds `cert`; forgets certificates expired for longer than `retention` once the book has
    /// grown by half since the last sweep (amortised: each insert pays O(1) on average).
    pub fn insert(&mut self, cert: IssuedCertificate, retention: Duration) {
        self.by_thumbprint.insert(cert.thumbprint.clone(), cert);
        if self.by_thumbprint.len() >= (self.swept_at * 3 / 2).max(SWEEP_FLOOR) {
            self.sweep(OffsetDateTime::now_utc() - retention);
        }
    }

    /// Forgets certificates that expired before `cutoff`.
    pub fn sweep(&mut self, cutoff: OffsetDateTime) {
        self.by_thumbprint.retain(|_, c| c.not_after >= cutoff);
        self.swept_at = self.by_thumbprint.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(n: usize, not_after: OffsetDateTime) -> IssuedCertificate {
        IssuedCertificate {
            thumbprint: format!("{n:040X}"),
            serial: n.to_be_bytes().to_vec(),
            ca: 0,
            subject: Subject::parse(&format!("CN=d{n}")).unwrap(),
            sans: vec![San::dns(&format!("d{n}")).unwrap()],
            spki: vec![0; 91],
            not_before: not_after - Duration::from_secs(60),
            not_after,
            requested_by: "oid".into(),
            revoked: false,
        }
    }

    #[test]
    fn long_expired_certificates_are_forgotten_as_the_book_grows() {
        let now = OffsetDateTime::now_utc();
        let retention = Duration::from_secs(60);
        let mut book = IssuedBook::default();
        // Alive, and expired but still within the retention: kept.
        book.insert(cert(0, now + Duration::from_secs(3600)), retention);
        book.insert(cert(1, now - Duration::from_secs(30)), retention);
        // Expired for longer than the retention: forgotten at the next sweep.
        for n in 2..SWEEP_FLOOR * 4 {
            book.insert(cert(n, now - Duration::from_secs(120)), retention);
        }
        assert!(book.len() < SWEEP_FLOOR * 3 / 2, "{} kept", book.len());
        assert!(book.get(&format!("{:040X}", 0)).is_some());
        assert!(book.get(&format!("{:040X}", 1)).is_some());
    }

    #[test]
    fn retention_follows_the_cas_clock_up_to_ten_minutes() {
        assert_eq!(retention(Clock::real()), Duration::from_secs(600));
        let fast = Clock::compressed(Duration::from_millis(10));
        assert_eq!(retention(fast), Duration::from_millis(300));
    }
}
