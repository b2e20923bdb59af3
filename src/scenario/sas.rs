//! Symmetric-key (SAS) devices in a scenario: a cohort's `auth: sas` with its `sas:` settings,
//! and the `migrate` event that moves a SAS cohort to EZCA certificates:
//!
//! ```yaml
//! fleet:
//!   cohorts:
//!     - {name: legacy, share: 100%, auth: sas, sas: {token_ttl: 1h, renew_at: 80%, keys: registry}}
//! events:
//!   - {at: 2m, migrate: {cohort: legacy, share: 100%, rate: 50/s}}
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{Percent, Rate, Span};

/// How a cohort's devices authenticate to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// An X.509 certificate from the CA (the identity is `certificateAuthority`).
    #[default]
    X509,
    /// A symmetric key: the password is a SAS token the device signs (identity type `sas`).
    Sas,
}

/// Where a SAS device's key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SasKeys {
    /// The hub generates them when the device creates its identity without keys; the device
    /// uses the primary key of the answer.
    #[default]
    Registry,
    /// Derived from a group key made for the run, as DPS symmetric-key groups derive them
    /// (base64 HMAC-SHA256 of the device id); the identity is created with that key.
    Derived,
}

/// A SAS cohort's tokens and keys.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SasSettings {
    /// How long each token the device signs is valid (default 1h, the SDKs' default TTL).
    #[serde(default = "default_token_ttl")]
    pub token_ttl: Span,
    /// Share of a token's lifetime after which the device signs a new one and reconnects with
    /// it (`sas.renew`; default 80%, as the C SDK).
    #[serde(default = "default_renew_at")]
    pub renew_at: Percent,
    /// `registry` (default) or `derived`.
    #[serde(default)]
    pub keys: SasKeys,
}

impl Default for SasSettings {
    fn default() -> Self {
        Self {
            token_ttl: default_token_ttl(),
            renew_at: default_renew_at(),
            keys: SasKeys::default(),
        }
    }
}

fn default_token_ttl() -> Span {
    Span(std::time::Duration::from_secs(3600))
}
fn default_renew_at() -> Percent {
    Percent(80.0)
}

/// `migrate:`: move a share of a SAS cohort's devices to EZCA certificates, at a rate. Each
/// device is issued a certificate (`migrate.issue`), its identity switched to
/// `certificateAuthority` (`migrate.update`), and it reconnects with the certificate
/// (`migrate.reconnect`); from then on it is an X.509 device of its cohort's certificate settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateEvent {
    /// The cohort (with `auth: sas`) whose devices migrate.
    pub cohort: String,
    /// Share of the cohort's devices started by then (default 100%).
    #[serde(default = "all")]
    pub share: Percent,
    /// Devices starting their migration per second (keep the hub's registry throttle in mind:
    /// each migration is two registry operations).
    pub rate: Rate,
}

fn all() -> Percent {
    Percent(100.0)
}
