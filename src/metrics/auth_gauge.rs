//! Gauges of the fleet's hub identities by authentication type: how many devices hold a SAS
//! identity and how many a certificate (CA-signed) one, moving as SAS devices migrate. Shown
//! only for runs that have SAS devices, so the reports of X.509-only runs stay as they were.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// How a device's hub identity authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Sas,
    X509,
}

impl AuthType {
    pub fn name(self) -> &'static str {
        match self {
            AuthType::Sas => "sas",
            AuthType::X509 => "x509",
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct IdentityGauges {
    sas: AtomicI64,
    x509: AtomicI64,
    /// A SAS identity was seen: from then on the gauges are reported.
    any_sas: AtomicBool,
}

impl IdentityGauges {
    fn gauge(&self, auth: AuthType) -> &AtomicI64 {
        match auth {
            AuthType::Sas => &self.sas,
            AuthType::X509 => &self.x509,
        }
    }

    pub(super) fn change(&self, from: Option<AuthType>, to: AuthType) {
        if let Some(from) = from {
            self.gauge(from).fetch_sub(1, Ordering::Relaxed);
        }
        self.gauge(to).fetch_add(1, Ordering::Relaxed);
        if to == AuthType::Sas {
            self.any_sas.store(true, Ordering::Relaxed);
        }
    }

    /// `sas` and `x509` counts, or nothing for a run that never had a SAS identity.
    pub(super) fn snapshot(&self) -> BTreeMap<&'static str, i64> {
        if !self.any_sas.load(Ordering::Relaxed) {
            return BTreeMap::new();
        }
        [AuthType::Sas, AuthType::X509]
            .into_iter()
            .map(|a| (a.name(), self.gauge(a).load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_move_identities_from_sas_to_x509() {
        let g = IdentityGauges::default();
        g.change(None, AuthType::X509);
        assert!(g.snapshot().is_empty(), "X.509-only runs report nothing");
        g.change(None, AuthType::Sas);
        g.change(None, AuthType::Sas);
        g.change(Some(AuthType::Sas), AuthType::X509);
        let s = g.snapshot();
        assert_eq!((s["sas"], s["x509"]), (1, 2));
    }
}
