//! The hub emulator's registry REST API as a service client sees it: SAS authorisation checked
//! exactly, IoT Hub's status codes, error bodies and `iothub-errorcode` header.

mod common;

use fleetsim::clock::Clock;
use fleetsim::iothub::registry::{AuthenticationType, Device, DeviceStatus, RegistryClient};
use fleetsim::iothub::{ConnectionString, HubError};

#[tokio::test]
async fn create_get_conflict_and_not_found() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);

    let created = registry
        .create(&Device::certificate_authority("reg-1"))
        .await
        .expect("created");
    assert_eq!(created.device_id, "reg-1");
    assert_eq!(
        created.authentication.kind,
        AuthenticationType::CertificateAuthority
    );
    assert_eq!(created.status, DeviceStatus::Enabled);
    assert!(!created.etag.is_empty() && !created.generation_id.is_empty());
    assert_eq!(registry.get("reg-1").await.expect("get"), created);

    match registry
        .create(&Device::certificate_authority("reg-1"))
        .await
    {
        Err(HubError::Status {
            status: 409,
            code,
            body,
            ..
        }) => {
            assert_eq!(code, "DeviceAlreadyExists");
            let outer: serde_json::Value = serde_json::from_str(&body).unwrap();
            let inner: serde_json::Value =
                serde_json::from_str(outer["Message"].as_str().unwrap()).unwrap();
            assert_eq!(inner["errorCode"], 409001);
        }
        other => panic!("expected 409, got {other:?}"),
    }
    match registry.get("nobody").await {
        Err(HubError::Status {
            status: 404, code, ..
        }) => assert_eq!(code, "DeviceNotFound"),
        other => panic!("expected 404, got {other:?}"),
    }
    e.shutdown().await;
}

#[tokio::test]
async fn tokens_signed_with_another_key_or_policy_are_refused() {
    let e = common::start_emulators(Clock::real()).await;
    let good = e.hub.connection_string();
    let roots = [e.tls_root.clone()];

    let wrong_key = ConnectionString::new(
        &good.host_name,
        &good.key_name,
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    let wrong_policy = ConnectionString::parse(
        &good
            .to_secret_string()
            .replace("iothubowner", "registryRead"),
    )
    .unwrap();
    let wrong_hub = ConnectionString::parse(
        &good
            .to_secret_string()
            .replace(common::HUB_HOST, "other.azure-devices.net"),
    )
    .unwrap();
    for creds in [wrong_key, wrong_policy, wrong_hub] {
        let client = RegistryClient::new(&e.hub_registry_url, creds, &roots, true).unwrap();
        match client
            .create(&Device::certificate_authority("sneaky"))
            .await
        {
            Err(HubError::Status {
                status: 401, code, ..
            }) => assert_eq!(code, "IotHubUnauthorized"),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    assert!(e.hub.device("sneaky").is_none());

    // No Authorization header at all.
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap();
    let resp = http
        .get(format!(
            "{}/devices/x?api-version=2021-04-12",
            e.hub_registry_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    e.shutdown().await;
}
