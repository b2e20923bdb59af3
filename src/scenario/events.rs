//! Timed scenario events and the certificate-lifecycle choices that go with them: revocation
//! events (`events: [{at: 20s, revoke: 10%, method: admin}]`), how a renewed certificate replaces
//! the old connection (`certificate.swap`) and how a revocation is made (`method`).

use serde::{Deserialize, Serialize};

use super::{Percent, Span};

/// One thing that happens to the fleet at a point of the run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When, from the first arrival (real time).
    pub at: Span,
    /// Share of the devices started by then (and not yet revoked) whose certificate is revoked.
    pub revoke: Percent,
    /// Who revokes: the device itself or the administrator.
    #[serde(default)]
    pub method: RevokeMethod,
}

/// How a certificate is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevokeMethod {
    /// The device revokes its own certificate (`RevokeCertificate` with the certificate-JWT, so
    /// the key must be RSA).
    #[serde(rename = "self")]
    SelfRevoke,
    /// An administrator revokes it by thumbprint with the Azure AD identity (`RevokeCertificateV2`).
    #[default]
    Admin,
}

impl RevokeMethod {
    pub fn name(self) -> &'static str {
        match self {
            RevokeMethod::SelfRevoke => "self",
            RevokeMethod::Admin => "admin",
        }
    }
}

/// How a device moves from its old certificate's connection to the renewed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Swap {
    /// Close the old connection, then connect with the new certificate.
    #[default]
    BreakBeforeMake,
    /// Connect with the new certificate while the old connection is up (the hub drops the old
    /// session when the new one arrives, IoT Hub's takeover rule), then close the old one.
    MakeBeforeBreak,
}

impl Swap {
    pub fn name(self) -> &'static str {
        match self {
            Swap::BreakBeforeMake => "break-before-make",
            Swap::MakeBeforeBreak => "make-before-break",
        }
    }
}

/// Rules for events: each event's `at` falls inside the duration, and self-revocation has an RSA
/// key to sign with.
pub(super) fn validate(s: &super::Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    let rsa = s.certificate_policies().iter().all(|c| c.signs_jwt());
    if let Some(e) = s
        .events
        .iter()
        .find(|e| e.value.method == RevokeMethod::SelfRevoke)
        && !rsa
    {
        return Err((
            e.referenced,
            "method: self revokes with an RS256 certificate-JWT signed by the device key, so certificate.key (of every cohort) must be rsa-2048, rsa-3072 or rsa-4096".into(),
        ));
    }
    for e in &s.events {
        if e.value.at.0 >= s.duration.0 {
            return Err((
                e.referenced,
                format!(
                    "event at {:?} is not before the end of the run ({:?})",
                    e.value.at.0, s.duration.0
                ),
            ));
        }
    }
    Ok(())
}
