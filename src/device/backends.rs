//! The seams between a device and the services it uses: the traits a device talks through
//! ([`CertificateAuthority`], [`DeviceRegistry`] or [`ProvisioningService`],
//! [`DeviceTransport`] with its [`DeviceSession`]), what they answer with ([`Issued`],
//! [`Placement`], [`ServiceError`]), and [`Backends`], which names one implementation of each
//! for a run. A device is generic over one `Backends`, so a new kind of service is one more
//! trait here and one more associated type, not one more generic parameter on every step.
//!
//! A leaf: it imports nothing else of `device`.

use std::future::Future;

use rustls_pki_types::CertificateDer;

use crate::crypto::{CertInfo, DeviceKey};
use crate::metrics::Outcome;

/// The services of one run, one implementation each: a device of the run is generic over this
/// alone (e.g. `adapters::HubBackends`: EZCA, IoT Hub's registry and its MQTT endpoint).
pub trait Backends: Send + Sync + 'static {
    type Ca: CertificateAuthority;
    type Registry: DeviceRegistry;
    type Transport: DeviceTransport;
    /// A provisioning service (DPS), for runs whose devices learn their hub from one
    /// ([`NoProvisioning`] for backends without).
    type Provisioning: ProvisioningService;
}

/// The session type a run's transport opens.
pub type Session<B> = <<B as Backends>::Transport as DeviceTransport>::Session;

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Network trouble or a 5xx: retry with backoff.
    Transient,
    /// The service asked us to slow down (429, delayed acks): retry with backoff.
    Throttled,
    Timeout,
    /// The service said no (bad credentials, policy): retrying will not help.
    Rejected,
}

/// A failed call to a service, as the lifecycle sees it.
#[derive(Debug, Clone)]
pub struct ServiceError {
    /// Short label counted in metrics (`http_503`, `connack_5`, `refused`, ...).
    pub kind: String,
    pub class: FailureClass,
    pub message: String,
    /// How long the service asked us to wait (HTTP `Retry-After`), honoured over our own backoff.
    pub retry_after: Option<std::time::Duration>,
}

impl ServiceError {
    pub fn outcome(&self) -> Outcome {
        match self.class {
            FailureClass::Transient => Outcome::Error,
            FailureClass::Throttled => Outcome::Throttled,
            FailureClass::Timeout => Outcome::Timeout,
            FailureClass::Rejected => Outcome::Rejected,
        }
    }

    pub fn retryable(&self) -> bool {
        self.class != FailureClass::Rejected
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

/// A certificate a CA issued: the chain to present (leaf first, root omitted) and the leaf's facts.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub info: CertInfo,
}

pub trait CertificateAuthority: Send + Sync + 'static {
    /// Makes the device's id a name the caller may request certificates for.
    fn register_domain(
        &self,
        device_id: &str,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Requests a certificate for `device_id` from a CSR.
    fn issue(
        &self,
        device_id: &str,
        csr_pem: String,
        validity_days: u32,
    ) -> impl Future<Output = Result<Issued, ServiceError>> + Send;
    /// Renews `current` (whose key is `current_key`) with a CSR for a new key, by `path` (the
    /// device's cohort chooses it; CAs with one way of renewing ignore it).
    fn renew(
        &self,
        device_id: &str,
        current: &Issued,
        current_key: &DeviceKey,
        csr_pem: String,
        validity_days: u32,
        path: crate::scenario::Renewal,
    ) -> impl Future<Output = Result<Issued, ServiceError>> + Send;
    /// Revokes `current` (whose key is `current_key`): by the device itself or by an administrator.
    /// CAs without revocation refuse.
    fn revoke(
        &self,
        device_id: &str,
        current: &Issued,
        current_key: &DeviceKey,
        method: crate::scenario::RevokeMethod,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send {
        let _ = (device_id, current, current_key, method);
        async {
            Err(ServiceError {
                kind: "unsupported".into(),
                class: FailureClass::Rejected,
                message: "this CA does not revoke".into(),
                retry_after: None,
            })
        }
    }
}

pub trait DeviceRegistry: Send + Sync + 'static {
    /// Creates the device identity (CA-signed authentication); an existing identity is fine.
    fn register(&self, device_id: &str) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Creates a symmetric-key identity: with `key` as its primary key, or (`None`) with the
    /// keys the registry generates. Answers the primary key (an existing SAS identity's, if
    /// there is one). Registries without SAS identities refuse.
    fn register_sas(
        &self,
        device_id: &str,
        key: Option<String>,
    ) -> impl Future<Output = Result<String, ServiceError>> + Send {
        let _ = (device_id, key);
        async { Err(unsupported("this registry has no symmetric-key identities")) }
    }
    /// Switches the identity to CA-signed certificates (a migration from SAS), under the
    /// identity's current etag. Registries that cannot refuse.
    fn use_certificates(
        &self,
        device_id: &str,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send {
        let _ = device_id;
        async {
            Err(unsupported(
                "this registry cannot change authentication types",
            ))
        }
    }
}

/// A refusal for what a backend does not do.
pub fn unsupported(message: &str) -> ServiceError {
    ServiceError {
        kind: "unsupported".into(),
        class: FailureClass::Rejected,
        message: message.into(),
        retry_after: None,
    }
}

/// Where a provisioning service placed a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The host name of the hub the device is to connect to.
    pub hub: String,
    /// The device's id in that hub.
    pub device_id: String,
}

/// One registration with a provisioning service: where it placed the device (or why not), and
/// what it took.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub result: Result<Placement, ServiceError>,
    /// Status polls sent while the service was assigning.
    pub polls: u32,
    /// Requests the service throttled (429) and the client sent again after its `retry-after`.
    pub throttled: u32,
}

pub trait ProvisioningService: Send + Sync + 'static {
    /// Registers `device_id` (its certificate's CN), presenting `chain` and proving possession
    /// of `key`, until the service has placed it or given a final answer.
    fn provision(
        &self,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: &DeviceKey,
    ) -> impl Future<Output = Provisioned> + Send;
}

/// The provisioning service of backends that have none: it cannot be built, so a run of such
/// backends never provisions.
pub enum NoProvisioning {}

impl ProvisioningService for NoProvisioning {
    async fn provision(
        &self,
        _: &str,
        _: Vec<CertificateDer<'static>>,
        _: &DeviceKey,
    ) -> Provisioned {
        match *self {}
    }
}

pub trait DeviceTransport: Send + Sync + 'static {
    type Session: DeviceSession;
    /// Connects as `device_id` with `chain`, proving possession of `key`.
    fn connect(
        &self,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: &DeviceKey,
    ) -> impl Future<Output = Result<Self::Session, ServiceError>> + Send;
    /// Like [`connect`](Self::connect), to the hub whose host name is `hub` (the hub a
    /// provisioning service assigned). Transports bound to one hub refuse.
    fn connect_to(
        &self,
        hub: &str,
        device_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: &DeviceKey,
    ) -> impl Future<Output = Result<Self::Session, ServiceError>> + Send {
        let _ = (device_id, chain, key);
        let message = format!("this transport connects to one hub only, not to {hub}");
        async move {
            Err(ServiceError {
                kind: "unsupported".into(),
                class: FailureClass::Rejected,
                message,
                retry_after: None,
            })
        }
    }
    /// Connects as `device_id` with a SAS token signed with `key` (base64) that expires at
    /// `expiry` (Unix seconds), no client certificate, to `hub` (a hub a provisioning service
    /// assigned) or to the run's hub. Transports that take no tokens refuse.
    fn connect_sas(
        &self,
        hub: Option<&str>,
        device_id: &str,
        key: &str,
        expiry: u64,
    ) -> impl Future<Output = Result<Self::Session, ServiceError>> + Send {
        let _ = (hub, device_id, key, expiry);
        async { Err(unsupported("this transport takes no SAS tokens")) }
    }
}

/// A message the service sent the device (a twin answer, a desired-properties change, a method
/// request, a cloud-to-device message): its topic and body as they arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub topic: String,
    pub payload: bytes::Bytes,
}

/// What a session hears between the device's own requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(Delivery),
    /// The connection was lost, with why.
    Closed(String),
}

pub trait DeviceSession: Send + 'static {
    /// Publishes; for at-least-once, returns when the broker acknowledged.
    fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        at_least_once: bool,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Disconnects cleanly.
    fn close(self) -> impl Future<Output = ()> + Send;
    /// Completes when the connection is lost (the hub dropped it, or the network did), with why;
    /// messages from the service are dropped meanwhile. Call it only between publishes.
    /// Sessions that cannot tell never complete.
    fn closed(&mut self) -> impl Future<Output = String> + Send {
        std::future::pending()
    }
    /// Subscribes to topic `filters` (each at least once when `true`) and returns once the
    /// service has granted them. Sessions without cloud-to-device traffic refuse.
    fn subscribe(
        &mut self,
        filters: Vec<(String, bool)>,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send {
        let _ = filters;
        async {
            Err(ServiceError {
                kind: "unsupported".into(),
                class: FailureClass::Rejected,
                message: "this transport carries no cloud-to-device traffic".into(),
                retry_after: None,
            })
        }
    }
    /// The next message from the service, or the loss of the connection. Call it only between
    /// the device's own requests (as [`closed`](Self::closed)); messages that arrive during a
    /// publish are kept for it.
    fn incoming(&mut self) -> impl Future<Output = Incoming> + Send {
        async { Incoming::Closed(self.closed().await) }
    }
}
