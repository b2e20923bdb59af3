//! The device's first step: a key and a certificate for it. A new device enrols (keygen → csr →
//! ca.register_domain → ca.issue); a resumed soak's device takes what the state holds
//! ([`super::resume`]), or, if that certificate expired while the soak was down, is issued a new
//! one for the domain it has. Also the key and CSR every certificate request starts with, which
//! renewals use too.

use tokio::time::Instant;

use super::backends::{Backends, CertificateAuthority, Issued};
use super::core::{Device, Stop, local_failure};
use super::resume;
use crate::crypto::DeviceKey;
use crate::metrics::{Outcome, Phase};

impl<B: Backends> Device<'_, B> {
    /// The key and certificate the device starts its life with.
    pub(super) async fn obtain_certificate(&mut self) -> Result<(DeviceKey, Issued), Stop> {
        match resume::stored(self.spec, &mut self.report)? {
            Some((_, issued)) if resume::expired(&issued) => self.reissue_expired().await,
            Some(stored) => Ok(stored),
            None => self.request_certificate(false).await,
        }
    }

    /// A resumed soak's device whose stored certificate expired while the soak was down: it
    /// counts as expired before renewal (it was), and, as a real device's enrollment agent
    /// would, gets a new key and certificate for its registered domain before it connects; the
    /// state and the report count that as a renewal.
    async fn reissue_expired(&mut self) -> Result<(DeviceKey, Issued), Stop> {
        tracing::info!(device = %self.spec.id, "stored certificate expired while the soak was down; requesting a new one");
        self.report.expired_before_renewal = true;
        self.services.recorder.certs().expired_before_renewal();
        let obtained = self.request_certificate(true).await?;
        self.report.renewals += 1;
        Ok(obtained)
    }

    /// A key and a certificate from the CA: a first enrolment registers the device's domain
    /// first; a re-issue (`again`) uses the domain it has.
    async fn request_certificate(&mut self, again: bool) -> Result<(DeviceKey, Issued), Stop> {
        let key = self.next_key().await?;
        let csr = self.csr(&key, &[])?;
        let ca = &self.services.ca;
        let id = self.spec.id.as_str();
        let validity = self.spec.validity_days;
        self.journal_intent(Phase::CaIssue, again, &key, &csr)
            .await?;
        if !again {
            self.attempt(Phase::CaRegisterDomain, || ca.register_domain(id))
                .await?;
        }
        let issued = self
            .attempt(Phase::CaIssue, || ca.issue(id, csr.clone(), validity))
            .await?;
        self.journal_certificate(Phase::CaIssue, again, &key, &issued)
            .await?;
        self.report.issued(&issued);
        Ok((key, issued))
    }

    /// The device's next key from the run's key source: one key per certificate, so the first
    /// enrolment takes generation 0 and each renewal the next (fresh keys are timed as
    /// `keygen`; pool keys are not generated here at all).
    pub(super) async fn next_key(&mut self) -> Result<DeviceKey, Stop> {
        let generation = self.report.certificates_issued;
        let recorder = self.services.recorder.clone();
        self.services
            .keys
            .key_for(self.spec.key_kind, self.spec.index, generation, &recorder)
            .await
            .map_err(|e| local_failure(Phase::Keygen, "keygen", e.to_string()))
    }

    /// A CSR for `key` with the device's id as CN and `dns_sans`, timed as `csr`.
    pub(super) fn csr(&self, key: &DeviceKey, dns_sans: &[String]) -> Result<String, Stop> {
        let t = Instant::now();
        let csr = key
            .csr_pem_with_sans(&self.spec.id, dns_sans)
            .map_err(|e| local_failure(Phase::Csr, "csr", e.to_string()))?;
        self.services
            .recorder
            .record(Phase::Csr, Outcome::Ok, t, Instant::now());
        Ok(csr)
    }
}
