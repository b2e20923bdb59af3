//! The device's service traits implemented for EZCA ([`EzcaCa`]), the IoT Hub registry
//! ([`HubRegistry`]) and IoT Hub's MQTT endpoint ([`MqttTransport`]); [`HubBackends`] names
//! them together with DPS ([`super::dps`]), the backends of a run against EZCA and IoT Hub
//! (embedded or real).

use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::backends::{
    Backends, CertificateAuthority, Delivery, DeviceRegistry, DeviceSession, DeviceTransport,
    FailureClass, Incoming, Issued, ServiceError,
};
use crate::crypto::{CertInfo, DeviceKey};
use crate::ezca::models::{AadObject, AvailableCa, CertificateCreateRequest};
use crate::ezca::{Client as EzcaClient, EzcaError};
use crate::iothub::HubError;
use crate::iothub::mqtt::{self, MqttSession, MqttTransport};
use crate::iothub::registry::RegistryClient;
use crate::scenario::Renewal;

/// EZCA, IoT Hub's registry (or DPS) and IoT Hub's MQTT endpoint: the backends of a fleet run.
pub enum HubBackends {}

impl Backends for HubBackends {
    type Ca = EzcaCa;
    type Registry = HubRegistry;
    type Transport = MqttTransport;
    type Provisioning = super::dps::DpsProvisioning;
}

/// What a device needs to know of a service's failure to decide what to do about it.
struct Failure {
    kind: String,
    message: String,
    /// The HTTP status, if the service answered with one.
    status: Option<u16>,
    retry_after: Option<Duration>,
    /// The service meant "slow down" without a 429 (e.g. the hub closing before CONNACK).
    throttled: bool,
    timeout: bool,
    transient: bool,
}

impl From<Failure> for ServiceError {
    fn from(f: Failure) -> Self {
        let class = if f.status == Some(429) || f.throttled {
            FailureClass::Throttled
        } else if f.timeout {
            FailureClass::Timeout
        } else if f.transient {
            FailureClass::Transient
        } else {
            FailureClass::Rejected
        };
        ServiceError {
            kind: f.kind,
            class,
            message: f.message,
            retry_after: f.retry_after,
        }
    }
}

impl From<EzcaError> for ServiceError {
    fn from(e: EzcaError) -> Self {
        let (status, retry_after) = match &e {
            EzcaError::Status {
                status,
                retry_after,
                ..
            } => (Some(*status), *retry_after),
            _ => (None, None),
        };
        Failure {
            kind: e.kind(),
            message: e.to_string(),
            status,
            retry_after,
            throttled: false,
            timeout: matches!(e, EzcaError::Timeout),
            transient: e.is_transient(),
        }
        .into()
    }
}

impl From<HubError> for ServiceError {
    fn from(e: HubError) -> Self {
        let (status, retry_after) = match &e {
            HubError::Status {
                status,
                retry_after,
                ..
            } => (Some(*status), *retry_after),
            _ => (None, None),
        };
        Failure {
            kind: e.kind(),
            message: e.to_string(),
            status,
            retry_after,
            throttled: matches!(e, HubError::ClosedBeforeConnack),
            timeout: matches!(e, HubError::Timeout),
            transient: e.is_transient(),
        }
        .into()
    }
}

/// EZCA as the IoT samples use it: each device id is registered as a domain owned by the caller,
/// then `RequestSSLCertificate` issues the leaf and AIA supplies the issuer for the chain.
pub struct EzcaCa {
    pub client: EzcaClient,
    pub ca: AvailableCa,
    pub owner: AadObject,
}

impl EzcaCa {
    /// Picks the CA with `ca_id`, or the only SSL CA the caller may use.
    pub async fn discover(client: EzcaClient, ca_id: Option<&str>) -> Result<Self, EzcaError> {
        Self::discover_by(client, ca_id, None).await
    }

    /// Picks the CA with `ca_id`; else, with `key_type`, the only SSL CA whose `CAKeyType` is
    /// that (e.g. `EC P256`), so a scenario need not know a CA's generated id; else the only SSL
    /// CA the caller may use.
    pub async fn discover_by(
        client: EzcaClient,
        ca_id: Option<&str>,
        key_type: Option<&str>,
    ) -> Result<Self, EzcaError> {
        let owner = client.caller().await?;
        let mut cas = client.get_available_ssl_cas().await?;
        if let (None, Some(want)) = (ca_id, key_type) {
            let offered: Vec<String> = cas.iter().filter_map(|c| c.key_type.clone()).collect();
            cas.retain(|c| {
                c.key_type
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case(want))
            });
            if cas.is_empty() {
                return Err(EzcaError::NoCa(format!(
                    "no SSL CA with CAKeyType {want:?} (available: {})",
                    offered.join(", ")
                )));
            }
        }
        let ca = match ca_id {
            Some(id) => cas
                .into_iter()
                .find(|c| {
                    c.ca_id
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(id))
                })
                .ok_or_else(|| {
                    EzcaError::NoCa(format!("CA {id} is not among the available SSL CAs"))
                })?,
            None => match <[AvailableCa; 1]>::try_from(cas) {
                Ok([only]) => only,
                Err(cas) => {
                    return Err(EzcaError::NoCa(format!(
                        "{} SSL CAs are available: set target.remote.ezca.ca_id or ca_key_type",
                        cas.len()
                    )));
                }
            },
        };
        Ok(Self { client, ca, owner })
    }
}

impl EzcaCa {
    /// The issued `leaf` with its chain (AIA supplies the issuers) and its facts.
    async fn complete(
        &self,
        leaf: rustls_pki_types::CertificateDer<'static>,
    ) -> Result<Issued, ServiceError> {
        let chain = self.client.chain_for(leaf).await?;
        let info = CertInfo::parse(&chain[0])
            .map_err(|e| ServiceError::from(EzcaError::Malformed(e.to_string())))?;
        Ok(Issued { chain, info })
    }
}

impl CertificateAuthority for EzcaCa {
    async fn renew(
        &self,
        device_id: &str,
        current: &Issued,
        current_key: &DeviceKey,
        csr_pem: String,
        validity_days: u32,
        path: Renewal,
    ) -> Result<Issued, ServiceError> {
        match path {
            // As the enrollment agent (Azure AD): request again for the registered domain.
            Renewal::EnrollmentAgent => self.issue(device_id, csr_pem, validity_days).await,
            // As the device (certificate-JWT signed with the current key): RenewCertificateV2.
            Renewal::Certificate => {
                let leaf = self
                    .client
                    .renew_certificate_v2(
                        &current.chain[0],
                        current_key,
                        csr_pem,
                        i64::from(validity_days),
                    )
                    .await?;
                self.complete(leaf).await
            }
        }
    }

    async fn revoke(
        &self,
        _device_id: &str,
        current: &Issued,
        current_key: &DeviceKey,
        method: crate::scenario::RevokeMethod,
    ) -> Result<(), ServiceError> {
        use crate::scenario::RevokeMethod;
        match method {
            // The device, authenticated by its certificate-JWT: RevokeCertificate.
            RevokeMethod::SelfRevoke => Ok(self
                .client
                .revoke_certificate(&current.chain[0], current_key)
                .await?),
            // The administrator, by thumbprint with the Azure AD identity: RevokeCertificateV2.
            RevokeMethod::Admin => {
                let thumbprint = crate::crypto::sha1_thumbprint(&current.chain[0]);
                Ok(self
                    .client
                    .revoke_certificate_v2(&self.ca, &thumbprint)
                    .await?)
            }
        }
    }

    async fn register_domain(&self, device_id: &str) -> Result<(), ServiceError> {
        Ok(self
            .client
            .register_new_domain(&self.ca, device_id, &self.owner)
            .await?)
    }

    async fn issue(
        &self,
        device_id: &str,
        csr_pem: String,
        validity_days: u32,
    ) -> Result<Issued, ServiceError> {
        let request = CertificateCreateRequest::for_device(
            &self.ca,
            device_id,
            csr_pem,
            i64::from(validity_days),
        );
        let leaf = self.client.request_ssl_certificate(&request).await?;
        self.complete(leaf).await
    }
}

pub struct HubRegistry(pub RegistryClient);

impl DeviceRegistry for HubRegistry {
    async fn register(&self, device_id: &str) -> Result<(), ServiceError> {
        // Created with the run's tag in the same call, so `fleetsim cleanup` finds it even if
        // the run dies right after. Already registered (a rerun with the same ids) is what we
        // need too; it stays untagged: it may not be this run's, and cleanup must leave it.
        self.0.create_tagged(device_id).await?;
        Ok(())
    }

    async fn register_sas(
        &self,
        device_id: &str,
        key: Option<String>,
    ) -> Result<String, ServiceError> {
        super::sas_hub::register_sas(&self.0, device_id, key).await
    }

    async fn use_certificates(&self, device_id: &str) -> Result<(), ServiceError> {
        super::sas_hub::use_certificates(&self.0, device_id).await
    }
}

impl DeviceTransport for MqttTransport {
    type Session = MqttSession;

    async fn connect(
        &self,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: &DeviceKey,
    ) -> Result<MqttSession, ServiceError> {
        Ok(MqttTransport::connect(self, device_id, chain, key.private_key_der()).await?)
    }

    async fn connect_to(
        &self,
        hub: &str,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: &DeviceKey,
    ) -> Result<MqttSession, ServiceError> {
        let key = key.private_key_der();
        Ok(MqttTransport::connect_to(self, hub, device_id, chain, key).await?)
    }

    async fn connect_sas(
        &self,
        hub: Option<&str>,
        device_id: &str,
        key: &str,
        expiry: u64,
    ) -> Result<MqttSession, ServiceError> {
        Ok(MqttTransport::connect_sas(self, hub, device_id, key, expiry).await?)
    }
}

impl DeviceSession for MqttSession {
    async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        at_least_once: bool,
    ) -> Result<(), ServiceError> {
        Ok(MqttSession::publish(self, topic, payload, at_least_once).await?)
    }

    async fn close(self) {
        self.disconnect().await
    }

    async fn closed(&mut self) -> String {
        MqttSession::closed(self).await
    }

    async fn subscribe(&mut self, filters: Vec<(String, bool)>) -> Result<(), ServiceError> {
        Ok(MqttSession::subscribe(self, filters).await?)
    }

    async fn incoming(&mut self) -> Incoming {
        match MqttSession::incoming(self).await {
            mqtt::Incoming::Message(m) => Incoming::Message(Delivery {
                topic: m.topic,
                payload: m.payload,
            }),
            mqtt::Incoming::Closed(reason) => Incoming::Closed(reason),
        }
    }
}
