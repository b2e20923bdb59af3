//! The hub emulator's registry REST API as a service client sees it: SAS authorisation checked
//! exactly, IoT Hub's status codes, error bodies and `iothub-errorcode` header.

use crate::common;

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

#[tokio::test]
async fn etags_guard_updates_and_deletes() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);
    let created = registry
        .create(&Device::certificate_authority("et-1"))
        .await
        .unwrap();

    let mut disabled = created.clone();
    disabled.status = DeviceStatus::Disabled;
    match registry.update(&disabled, Some("not-the-etag")).await {
        Err(HubError::Status {
            status: 412, code, ..
        }) => assert_eq!(code, "PreconditionFailed"),
        other => panic!("expected 412, got {other:?}"),
    }
    let updated = registry
        .update(&disabled, Some(&created.etag))
        .await
        .expect("update with the right etag");
    assert_eq!(updated.status, DeviceStatus::Disabled);
    assert_ne!(updated.etag, created.etag, "an update changes the etag");
    assert_eq!(updated.generation_id, created.generation_id);

    match registry.delete("et-1", Some(&created.etag)).await {
        Err(HubError::Status { status: 412, .. }) => {}
        other => panic!("a stale etag cannot delete: {other:?}"),
    }
    registry
        .delete("et-1", None)
        .await
        .expect("unconditional delete");
    assert!(e.hub.device("et-1").is_none());
    match registry.delete("et-1", None).await {
        Err(HubError::Status { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    e.shutdown().await;
}

#[tokio::test]
async fn bulk_create_up_to_100_with_per_device_errors() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);
    let ids: Vec<String> = (0..100).map(|i| format!("bulk-{i:03}")).collect();
    let result = registry.bulk_create(&ids).await.expect("bulk create");
    assert!(
        result.is_successful && result.errors.is_empty(),
        "{result:?}"
    );
    assert!(ids.iter().all(|id| {
        e.hub
            .device(id)
            .is_some_and(|d| d.authentication.kind == AuthenticationType::CertificateAuthority)
    }));

    // Two new and one existing: the existing one is reported, the new ones are created.
    let mixed = vec![
        "bulk-new-1".to_string(),
        "bulk-000".to_string(),
        "bulk-new-2".to_string(),
    ];
    let result = registry
        .bulk_create(&mixed)
        .await
        .expect("partial failure is a result");
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].device_id, "bulk-000");
    assert_eq!(result.errors[0].error_code, "DeviceAlreadyExists");
    assert!(e.hub.device("bulk-new-1").is_some() && e.hub.device("bulk-new-2").is_some());

    let too_many: Vec<String> = (0..101).map(|i| format!("many-{i}")).collect();
    match registry.bulk_create(&too_many).await {
        Err(HubError::Status {
            status: 413, code, ..
        }) => assert_eq!(code, "TooManyDevices"),
        other => panic!("expected 413, got {other:?}"),
    }
    e.shutdown().await;
}

#[tokio::test]
async fn disabling_or_deleting_a_connected_device_drops_it() {
    use fleetsim::device::DeviceRegistry;
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let registry = common::registry(&e);
    let hub_registry = fleetsim::device::adapters::HubRegistry(common::registry(&e));
    let transport = common::transport(&e);
    for id in ["dis-1", "del-1"] {
        hub_registry.register(id).await.unwrap();
    }

    let (key, issued) = common::enrol(&ca, "dis-1").await;
    let mut session = transport
        .connect("dis-1", issued.chain.clone(), key.private_key_der())
        .await
        .unwrap();
    registry
        .set_status("dis-1", DeviceStatus::Disabled)
        .await
        .unwrap();
    let after = session
        .publish("devices/dis-1/messages/events/".into(), b"x".to_vec(), true)
        .await;
    // Closed by the hub, not a PUBACK that never came (a timeout).
    assert!(
        matches!(after, Err(HubError::Closed(_))),
        "the disabled device's session was dropped: {after:?}"
    );
    // A disabled device is refused with CONNACK 3, which the SDKs treat as retryable.
    match transport
        .connect("dis-1", issued.chain.clone(), key.private_key_der())
        .await
    {
        Err(HubError::ConnectRefused(code)) => assert_eq!(code, "3"),
        Err(other) => panic!("expected CONNACK 3, got {other}"),
        Ok(_) => panic!("a disabled device connected"),
    }

    let (key, issued) = common::enrol(&ca, "del-1").await;
    let mut session = transport
        .connect("del-1", issued.chain.clone(), key.private_key_der())
        .await
        .unwrap();
    registry.delete("del-1", None).await.unwrap();
    let after = session
        .publish("devices/del-1/messages/events/".into(), b"x".to_vec(), true)
        .await;
    assert!(
        matches!(after, Err(HubError::Closed(_))),
        "the deleted device's session was dropped: {after:?}"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn emulator_accepts_its_own_azure_ad_tokens_only() {
    use fleetsim::iothub::registry::RegistryAuth;
    let e = common::start_emulators(Clock::real()).await;
    let roots = [e.tls_root.clone()];
    let token = e.hub.mint_token("registry-operator", 600);
    let aad = RegistryClient::with_auth(
        &e.hub_registry_url,
        RegistryAuth::Bearer(token),
        &roots,
        true,
    )
    .unwrap();
    aad.create(&Device::certificate_authority("aad-1"))
        .await
        .expect("bearer accepted");

    // A token minted by the CA emulator is for another audience and another key.
    let foreign =
        e.ca.mint_token("registry-operator", "x@example.invalid", 600);
    let wrong = RegistryClient::with_auth(
        &e.hub_registry_url,
        RegistryAuth::Bearer(foreign),
        &roots,
        true,
    )
    .unwrap();
    match wrong.get("aad-1").await {
        Err(HubError::Status { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    e.shutdown().await;
}
