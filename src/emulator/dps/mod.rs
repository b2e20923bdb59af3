//! The embedded Device Provisioning Service emulator (reference §6 and `dps-and-c2d.md`): the
//! device endpoint, MQTT 3.1.1 over TLS and over WebSocket (`session`); the registration flow
//! (`registration`) and its records ([`records`]); enrolment groups and individual enrolments
//! ([`enrollment`]) matched as DPS matches them (`matching`); allocation over the linked hubs
//! ([`allocation`]); the service REST API (`service`); DPS's published limits ([`throttle`]);
//! DPS's error body ([`error`]); and what they all share (`state`). The files form layers, none
//! importing `mod.rs`.
//!
//! DPS does not know the hub emulator: hubs are linked through [`LinkedHub`], which the assembly
//! implements for each hub emulator, so assignment creates the device's identity in the hub it
//! chose, with CA authentication, before the device is told where to go.

pub mod allocation;
pub mod enrollment;
pub mod error;
mod matching;
pub mod records;
mod registration;
mod service;
mod session;
mod state;
pub mod throttle;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use tokio::net::TcpListener;

use super::error::EmulatorError;
use super::http::HttpLimits;
use super::listener::Listener;
use super::tls::{ServerPki, client_cert_config};
use crate::iothub::ConnectionString;
use crate::sync::{lock, read, write};
use state::DpsState;

pub use enrollment::{EnrollmentGroup, IndividualEnrollment};
pub use error::DpsError;
pub use matching::Source;
pub use records::RegistrationState;
pub use state::{DpsConfig, LinkedHub, SERVICE_POLICY};
pub use throttle::DpsLimits;

/// A copy of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DpsStats {
    /// Accepted MQTT connections.
    pub connects: u64,
    /// CONNECTs refused (wrong id scope, no or mismatched certificate).
    pub refused: u64,
    /// Register requests received (throttled ones included).
    pub registrations: u64,
    /// Operation-status polls received (throttled ones included).
    pub polls: u64,
    pub assigned: u64,
    pub failed: u64,
    /// Registrations refused because the matching enrolment is disabled.
    pub disabled: u64,
    /// Registrations no enrolment trusts (401).
    pub unauthorized: u64,
    /// Requests answered 400/404: malformed bodies, unknown operation ids.
    pub malformed: u64,
    /// Connections closed for bad bytes: failed TLS handshakes, malformed or forbidden packets
    /// (a device that merely leaves, without DISCONNECT or TLS close_notify, is not counted).
    pub protocol_errors: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Assignments per hub host name.
    pub per_hub: BTreeMap<String, u64>,
}

/// A DPS emulator. Cheap to clone; serve it with [`DpsEmulator::serve_mqtt`],
/// [`DpsEmulator::serve_websocket`] and [`DpsEmulator::serve_service`].
#[derive(Clone)]
pub struct DpsEmulator {
    state: Arc<DpsState>,
}

/// `0ne` and 8 upper-case hex digits, the shape of Azure id scopes.
fn random_id_scope() -> String {
    format!("0ne{:08X}", rand::random::<u32>())
}

impl DpsEmulator {
    pub fn new(config: &DpsConfig) -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            state: Arc::new(DpsState {
                id_scope: config.id_scope.clone().unwrap_or_else(random_id_scope),
                config: config.clone(),
                policy_key: base64::engine::general_purpose::STANDARD.encode(key),
                hubs: RwLock::new(Vec::new()),
                certificates: RwLock::new(BTreeMap::new()),
                enrollments: RwLock::new(matching::Enrollments::default()),
                registrations: Mutex::new(records::Registrations::default()),
                throttles: throttle::Throttles::new(config.limits),
                counters: state::Counters::default(),
                listeners: Arc::default(),
            }),
        }
    }

    pub fn id_scope(&self) -> &str {
        &self.state.id_scope
    }

    pub fn host_name(&self) -> &str {
        &self.state.config.host_name
    }

    /// The `provisioningserviceowner` connection string (holds the key: never log it).
    pub fn connection_string(&self) -> ConnectionString {
        ConnectionString::new(
            &self.state.config.host_name,
            SERVICE_POLICY,
            &self.state.policy_key,
        )
    }

    /// Links a hub: enrolments may name it and devices may be assigned to it.
    pub fn link_hub(&self, hub: Arc<dyn LinkedHub>) {
        let mut hubs = write(&self.state.hubs);
        hubs.retain(|h| !h.host_name().eq_ignore_ascii_case(hub.host_name()));
        hubs.push(hub);
    }

    /// Host names of the linked hubs.
    pub fn linked_hubs(&self) -> Vec<String> {
        read(&self.state.hubs)
            .iter()
            .map(|h| h.host_name().to_string())
            .collect()
    }

    /// Uploads a (verified) CA certificate under `name`, for enrolment groups' `caReferences`.
    pub fn add_certificate(&self, name: &str, der: CertificateDer<'static>) {
        write(&self.state.certificates).insert(name.to_string(), der);
    }

    /// Creates or replaces an enrolment group, as the service API's PUT does.
    pub fn put_enrollment_group(
        &self,
        group: EnrollmentGroup,
    ) -> Result<EnrollmentGroup, DpsError> {
        service::store(&self.state, group, None)
    }

    /// The registration record of `registration_id` (service view plus the group that admitted
    /// it).
    pub fn registration(&self, registration_id: &str) -> Option<RegistrationState> {
        lock(&self.state.registrations).record(registration_id)
    }

    /// What DPS's accept loops saw, panicking connections included.
    pub fn listener_stats(&self) -> crate::emulator::listener::ListenerStats {
        self.state.listeners.snapshot()
    }

    pub fn stats(&self) -> DpsStats {
        let c = &self.state.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DpsStats {
            connects: n(&c.connects),
            refused: n(&c.refused),
            registrations: n(&c.registrations),
            polls: n(&c.polls),
            assigned: n(&c.assigned),
            failed: n(&c.failed),
            disabled: n(&c.disabled),
            unauthorized: n(&c.unauthorized),
            malformed: n(&c.malformed),
            // Failed TLS handshakes are counted by the shared accept loop.
            protocol_errors: n(&c.protocol_errors)
                + self.state.listeners.snapshot().handshakes_failed,
            throttled: n(&self.state.throttles.throttled),
            per_hub: lock(&c.per_hub).clone(),
        }
    }

    fn server_names(&self, listener: &TcpListener) -> Result<Vec<String>, EmulatorError> {
        Ok(vec![
            listener.local_addr()?.ip().to_string(),
            self.state.config.host_name.clone(),
            "localhost".into(),
        ])
    }

    /// Serves the device endpoint, MQTT over TLS, on `listener` until `shutdown`.
    pub fn serve_mqtt(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_devices(listener, pki, false, shutdown)
    }

    /// Serves the device endpoint, MQTT over WebSocket (`wss://…/$iothub/websocket`,
    /// subprotocol `mqtt`), on `listener` until `shutdown`.
    pub fn serve_websocket(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_devices(listener, pki, true, shutdown)
    }

    fn serve_devices(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        websocket: bool,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let config = client_cert_config(pki.issue_server(&self.server_names(&listener)?)?)?;
        let listener = Listener::new(listener, config).counting(self.state.listeners.clone());
        let state = self.state.clone();
        Ok(tokio::spawn(
            listener.serve(shutdown, move |tls, closing| {
                session::connection(tls, state.clone(), websocket, closing)
            }),
        ))
    }

    /// Serves the service REST API over HTTPS on `listener` until `shutdown`.
    pub fn serve_service(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        self.serve_service_with(listener, pki, HttpLimits::default(), shutdown)
    }

    /// Like [`DpsEmulator::serve_service`], with `limits`; every request is authorised before its
    /// body is read.
    pub fn serve_service_with(
        &self,
        listener: TcpListener,
        pki: &ServerPki,
        limits: HttpLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
        let names = [self.state.config.host_name.as_str(), "localhost"];
        let router = service::router(self.state.clone());
        let counters = self.state.listeners.clone();
        let options = service::http_options(self.state.clone(), limits);
        // One HTTPS port like DPS's 443: the service API, and the device endpoint over WebSocket.
        let state = self.state.clone();
        let upgrades = crate::emulator::shared_port::Upgrades {
            mqtt: Some(std::sync::Arc::new(move |stream, peer, stop| {
                Box::pin(session::session(
                    stream,
                    peer.certificates,
                    state.clone(),
                    stop,
                ))
            })),
            amqp: None,
        };
        let service = (router, options);
        crate::emulator::shared_port::spawn(
            listener, pki, &names, counters, service, upgrades, shutdown,
        )
    }
}
