//! Timed scenario events and the certificate-lifecycle choices that go with them: revocation
//! events (`events: [{at: 20s, revoke: 10%, method: admin}]`), how a renewed certificate replaces
//! the old connection (`certificate.swap`) and how a revocation is made (`method`).

use serde::{Deserialize, Serialize};

use super::units::{Percent, Span};

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
