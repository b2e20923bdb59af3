//! Helpers shared by the integration tests: emulators on loopback and clients wired to them.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::adapters::EzcaCa;
use fleetsim::device::{CertificateAuthority, Issued};
use fleetsim::emulator::{CaConfig, Emulators, HubConfig};
use fleetsim::ezca::{Client as EzcaClient, StaticToken};
use fleetsim::iothub::mqtt::{MqttEndpoint, MqttTransport};
use fleetsim::iothub::registry::RegistryClient;

pub const HUB_HOST: &str = "test-hub.azure-devices.net";

pub async fn start_emulators(clock: Clock) -> Emulators {
    let ca = CaConfig {
        clock,
        max_cert_life_days: 30,
    };
    let hub = HubConfig {
        host_name: HUB_HOST.into(),
        ..HubConfig::default()
    };
    Emulators::start([127, 0, 0, 1].into(), &ca, &hub)
        .await
        .expect("emulators start")
}

pub fn ezca_client(e: &Emulators, token: &str) -> EzcaClient {
    EzcaClient::new(
        e.ca.url(),
        Arc::new(StaticToken::new(token)),
        std::slice::from_ref(&e.tls_root),
        true,
    )
    .expect("ezca client")
}

pub async fn ezca(e: &Emulators) -> EzcaCa {
    let token = e.ca.mint_token(
        "11111111-2222-3333-4444-555555555555",
        "tester@example.invalid",
        3600,
    );
    EzcaCa::discover(ezca_client(e, &token), None)
        .await
        .expect("discover CA")
}

pub fn registry(e: &Emulators) -> RegistryClient {
    RegistryClient::new(
        &e.hub_registry_url,
        e.hub.connection_string(),
        std::slice::from_ref(&e.tls_root),
        true,
    )
    .expect("registry client")
}

pub fn transport(e: &Emulators) -> MqttTransport {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).expect("root");
    MqttTransport::new(
        MqttEndpoint {
            host: e.hub_mqtt_addr.ip().to_string(),
            port: e.hub_mqtt_addr.port(),
            hub_host: HUB_HOST.into(),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
        },
        roots,
    )
}

/// A key and a certificate for `id` from the emulated EZCA (domain registered first).
pub async fn enrol(ca: &EzcaCa, id: &str) -> (DeviceKey, Issued) {
    let key = DeviceKey::generate(KeyKind::P256).expect("keygen");
    ca.register_domain(id).await.expect("register domain");
    let issued = ca
        .issue(id, key.csr_pem(id).expect("csr"), 10)
        .await
        .expect("issue");
    (key, issued)
}
