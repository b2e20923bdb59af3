//! `certificate`: the key, lifetime and renewal of the devices' certificates. A cohort may
//! override any of it except `key_source` ([`CertificatePolicy::for_cohort`]); the rules that
//! tie fields together are checked per resolved policy ([`validate`]), so a cohort gets the
//! same errors as the top level.

use std::num::NonZeroU32;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::events::Swap;
use super::units::Percent;
use crate::crypto::KeyKind;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePolicy {
    /// The device key's kind: p256 (default), p384, rsa-2048, rsa-3072 or rsa-4096 (renewal:
    /// certificate and revoke method: self need RSA).
    #[serde(default)]
    pub key: KeyKind,
    /// Requested validity (`ValidityInDays`).
    #[serde(default = "default_validity_days")]
    pub validity_days: NonZeroU32,
    /// When to renew, as a share of the certificate's lifetime.
    #[serde(default = "default_renew_at")]
    pub renew_at: Percent,
    /// How to renew: `enrollment-agent` requests again with the Azure AD identity (any key kind);
    /// `certificate` authenticates with the current certificate (RSA keys, certificate-JWT,
    /// RenewCertificateV2), as EZCA's renewal client does on a device.
    #[serde(default = "default_renewal")]
    #[schemars(with = "Renewal")]
    pub renewal: Spanned<Renewal>,
    /// Spreads renewal points: each certificate renews at `renew_at` ± up to this share of its
    /// lifetime, drawn per certificate (none when absent).
    #[serde(default)]
    pub renew_jitter: Option<Percent>,
    /// Share of the lifetime after which a device stops retrying a failed renewal (it then runs on
    /// until the certificate expires, and counts as expired before renewal).
    #[serde(default = "default_renew_deadline")]
    pub renew_deadline: Percent,
    /// A new key for every renewal (true) or the same key re-certified (false).
    #[serde(default = "default_rekey")]
    pub rekey: bool,
    /// How the renewed certificate's connection replaces the old one.
    #[serde(default)]
    pub swap: Swap,
    /// `fresh`: each device generates its key when it needs it (timed as `keygen`); `pool`: keys
    /// come from the on-disk pool `fleetsim keys generate` fills (see `crypto::pool`).
    #[serde(default)]
    pub key_source: KeySourceKind,
}

fn default_renew_deadline() -> Percent {
    Percent(95.0)
}
fn default_rekey() -> bool {
    true
}

/// Fresh is the default: for the ECDSA kinds generation costs ~0.05 ms and is part of what a
/// device does; for RSA, choose `pool` so the simulator's CPU is not what is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeySourceKind {
    #[default]
    Fresh,
    Pool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Renewal {
    #[default]
    EnrollmentAgent,
    Certificate,
}

fn default_renewal() -> Spanned<Renewal> {
    let unknown = serde_saphyr::Location::UNKNOWN;
    Spanned::new(Renewal::default(), unknown, unknown)
}

impl Default for CertificatePolicy {
    fn default() -> Self {
        Self {
            key: KeyKind::default(),
            validity_days: default_validity_days(),
            renew_at: default_renew_at(),
            renewal: default_renewal(),
            renew_jitter: None,
            renew_deadline: default_renew_deadline(),
            rekey: default_rekey(),
            swap: Swap::default(),
            key_source: KeySourceKind::default(),
        }
    }
}

fn default_validity_days() -> NonZeroU32 {
    NonZeroU32::new(10).expect("10 is not zero")
}
fn default_renew_at() -> Percent {
    Percent(80.0)
}

impl CertificatePolicy {
    /// This policy with what `cohort` sets in its own `certificate` put over it.
    pub fn for_cohort(&self, cohort: &CohortCertificate) -> CertificatePolicy {
        CertificatePolicy {
            key: cohort.key.unwrap_or(self.key),
            validity_days: cohort.validity_days.unwrap_or(self.validity_days),
            renew_at: cohort.renew_at.unwrap_or(self.renew_at),
            renewal: cohort.renewal.clone().unwrap_or(self.renewal.clone()),
            renew_jitter: cohort.renew_jitter.or(self.renew_jitter),
            renew_deadline: cohort.renew_deadline.unwrap_or(self.renew_deadline),
            rekey: cohort.rekey.unwrap_or(self.rekey),
            swap: cohort.swap.unwrap_or(self.swap),
            key_source: self.key_source,
        }
    }

    /// RSA keys can sign the RS256 certificate-JWT (renewal: certificate, self-revocation).
    pub fn signs_jwt(&self) -> bool {
        matches!(
            self.key,
            KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096
        )
    }
}

/// The rules inside one resolved policy. `whose` prefixes the message (`""` for the top level,
/// `cohort "gateways": ` for a cohort) and `at` is where the error points when the offending
/// field has no position of its own.
pub(super) fn validate(
    c: &CertificatePolicy,
    whose: &str,
    at: Location,
) -> Result<(), (Location, String)> {
    if c.renewal.value == Renewal::Certificate && !c.signs_jwt() {
        let at = match c.renewal.referenced {
            l if l == Location::UNKNOWN => at,
            l => l,
        };
        return Err((
            at,
            format!(
                "{whose}renewal: certificate signs an RS256 token with the device key, so certificate.key must be rsa-2048, rsa-3072 or rsa-4096"
            ),
        ));
    }
    let renew_at = c.renew_at.fraction();
    let jitter = c.renew_jitter.map_or(0.0, |j| j.fraction());
    if renew_at + jitter >= c.renew_deadline.fraction() || renew_at - jitter <= 0.0 {
        return Err((
            at,
            format!(
                "{whose}certificate: renew_at {}% ± renew_jitter {}% must stay above 0% and below renew_deadline {}%",
                c.renew_at.0,
                jitter * 100.0,
                c.renew_deadline.0
            ),
        ));
    }
    Ok(())
}

/// The certificate settings a cohort may change: all of `certificate` but `key_source` (the pool
/// is the run's). Each one left out is the top level's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortCertificate {
    /// The device key's kind (default: `certificate.key`).
    #[serde(default)]
    pub key: Option<KeyKind>,
    /// Requested validity in days (default: `certificate.validity_days`).
    #[serde(default)]
    pub validity_days: Option<NonZeroU32>,
    /// When to renew, as a share of the lifetime (default: `certificate.renew_at`).
    #[serde(default)]
    pub renew_at: Option<Percent>,
    /// How to renew: `enrollment-agent` or `certificate` (default: `certificate.renewal`).
    #[serde(default)]
    #[schemars(with = "Option<Renewal>")]
    pub renewal: Option<Spanned<Renewal>>,
    /// Spread of the renewal points (default: `certificate.renew_jitter`).
    #[serde(default)]
    pub renew_jitter: Option<Percent>,
    /// Share of the lifetime after which a failed renewal is no longer retried (default:
    /// `certificate.renew_deadline`).
    #[serde(default)]
    pub renew_deadline: Option<Percent>,
    /// A new key for every renewal (default: `certificate.rekey`).
    #[serde(default)]
    pub rekey: Option<bool>,
    /// How the renewed certificate's connection replaces the old one (default: `certificate.swap`).
    #[serde(default)]
    pub swap: Option<Swap>,
}
