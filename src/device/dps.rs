//! The Device Provisioning Service behind [`ProvisioningService`]: [`DpsProvisioning`] runs a
//! device's registration with [`crate::iothub::dps::DpsClient`] (register, polls honouring
//! `retry-after`, 429s sent again) and tells the device what to do about the outcome: a
//! throttled or unreachable DPS is worth another try later, a refusal (disabled enrolment,
//! untrusted certificate) is not.
//!
//! A leaf beside [`super::adapters`]: it imports only [`super::backends`].

use rustls_pki_types::CertificateDer;

use super::backends::{FailureClass, Placement, Provisioned, ProvisioningService, ServiceError};
use crate::crypto::DeviceKey;
use crate::iothub::dps::{DpsClient, ProvisioningError};

/// DPS, as the devices of a run reach it (Azure's global endpoint or the embedded emulator).
pub struct DpsProvisioning(pub DpsClient);

impl ProvisioningService for DpsProvisioning {
    async fn provision(
        &self,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: &DeviceKey,
    ) -> Provisioned {
        let r = self
            .0
            .register(device_id, chain, key.private_key_der(), None)
            .await;
        Provisioned {
            result: r
                .outcome
                .map(|a| Placement {
                    hub: a.assigned_hub,
                    device_id: a.device_id,
                })
                .map_err(ServiceError::from),
            polls: r.polls,
            throttled: r.throttled,
        }
    }
}

impl From<ProvisioningError> for ServiceError {
    fn from(e: ProvisioningError) -> Self {
        use ProvisioningError::*;
        let (class, retry_after) = match &e {
            Throttled { retry_after } => (FailureClass::Throttled, Some(*retry_after)),
            Timeout(_) => (FailureClass::Timeout, None),
            // Network trouble, and answers that made no sense this time: try again later.
            Transport(_) | Tls(_) | Closed(_) | Protocol(_) | ConnectRefused(3) => {
                (FailureClass::Transient, None)
            }
            // DPS said no: a disabled enrolment, an untrusted certificate, a wrong id scope.
            ConnectRefused(_) | Failed { .. } | Disabled | Setup(_) => {
                (FailureClass::Rejected, None)
            }
        };
        ServiceError {
            kind: e.kind(),
            class,
            message: e.to_string(),
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn outcomes_follow_what_dps_said() {
        let e = ServiceError::from(ProvisioningError::Throttled {
            retry_after: Duration::from_secs(2),
        });
        assert_eq!(e.outcome(), crate::metrics::Outcome::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        let disabled = ServiceError::from(ProvisioningError::Disabled);
        assert_eq!(disabled.outcome(), crate::metrics::Outcome::Rejected);
        assert_eq!(disabled.kind, "disabled");
        assert!(!disabled.retryable());
        let failed = ServiceError::from(ProvisioningError::Failed {
            status: 401,
            code: Some(401002),
            message: "untrusted".into(),
        });
        assert_eq!(failed.kind, "failed");
        assert!(!failed.retryable());
        assert!(ServiceError::from(ProvisioningError::ConnectRefused(3)).retryable());
        assert!(!ServiceError::from(ProvisioningError::ConnectRefused(5)).retryable());
        let late = ServiceError::from(ProvisioningError::Timeout(Duration::from_secs(30)));
        assert_eq!(late.outcome(), crate::metrics::Outcome::Timeout);
    }
}
