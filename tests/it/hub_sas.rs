//! Symmetric-key (SAS) devices on the hub emulator, as IoT Hub treats them: the registry
//! generates keys a create leaves out and checks keys given, fills the fields the SDKs read,
//! and switches a device's authentication type under `If-Match` etags; MQTT CONNECT takes a
//! device-scoped token signed with one of the device's keys (or with the hub's policy) and
//! refuses expired, wrongly scoped and wrongly signed tokens and disabled devices; a session
//! is severed when its token expires.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fleetsim::clock::Clock;
use fleetsim::iothub::HubError;
use fleetsim::iothub::registry::{AuthenticationType, Device, DeviceStatus, X509Thumbprint};
use reqwest::Method;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use serde_json::json;

use crate::common;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sas_device(id: &str) -> Device {
    let mut device = Device::certificate_authority(id);
    device.authentication.kind = AuthenticationType::Sas;
    device
}

fn device_token(id: &str, key: &str, expiry: u64) -> String {
    let resource = format!("{}/devices/{id}", common::HUB_HOST);
    fleetsim::iothub::sas::token(&resource, key, None, expiry).unwrap()
}

#[tokio::test]
async fn a_sas_device_created_without_keys_gets_two_generated_keys() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);
    let created = registry.create(&sas_device("gen-1")).await.unwrap();
    let keys = &created.authentication.symmetric_key;
    let (primary, secondary) = (
        keys.primary_key.clone().expect("a primary key"),
        keys.secondary_key.clone().expect("a secondary key"),
    );
    for key in [&primary, &secondary] {
        assert_eq!(key.len(), 44, "{key}");
        assert_eq!(STANDARD.decode(key).unwrap().len(), 32);
    }
    assert_ne!(primary, secondary);
    assert_eq!(registry.get("gen-1").await.unwrap(), created);
    // Fields the SDKs read, as IoT Hub fills them for a new device.
    assert_eq!(created.generation_id.len(), 18);
    assert!(!created.etag.is_empty());
    assert_eq!(created.status_updated_time, "0001-01-01T00:00:00");
    assert_eq!(created.cloud_to_device_message_count, 0);
    assert_eq!(created.device_scope, None);
    assert!(!created.capabilities.iot_edge);

    // Both generated keys sign tokens the hub takes.
    for key in [&primary, &secondary] {
        let token = device_token("gen-1", key, now() + 600);
        let (_, code) = common::RawMqtt::connect_with(&e, "gen-1", None, &token, 30).await;
        assert_eq!(code, ConnectReturnCode::Success);
    }
    e.shutdown().await;
}

#[tokio::test]
async fn explicit_keys_must_be_base64_of_16_to_64_bytes() {
    let e = common::start_emulators(Clock::real()).await;
    let service = common::Service::new(&e);
    let put = |id: &str, primary: String| {
        let body = json!({
            "deviceId": id,
            "status": "enabled",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": primary, "secondaryKey": null}},
        });
        let service = service.clone();
        let path = format!("/devices/{id}");
        async move { service.call(Method::PUT, &path, &[], Some(&body)).await }
    };
    let short = put("k-short", STANDARD.encode([1u8; 15])).await;
    assert_eq!(short.status, 400);
    assert_eq!(short.header("iothub-errorcode"), Some("ArgumentInvalid"));
    assert!(
        short.error_message().contains("between 16 and 64 bytes"),
        "{}",
        short.error_message()
    );
    let garbage = put("k-garbage", "%%not-base64%%".into()).await;
    assert_eq!(garbage.status, 400);
    assert!(
        garbage
            .error_message()
            .contains("primaryKey is not valid base64")
    );
    assert_eq!(service.get("/devices/k-short").await.status, 404);

    let given = STANDARD.encode([9u8; 16]);
    let ok = put("k-ok", given.clone()).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(
        ok.body["authentication"]["symmetricKey"]["primaryKey"],
        given
    );
    // The key left out is generated.
    let secondary = ok.body["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap();
    assert_eq!(secondary.len(), 44);
    e.shutdown().await;
}

#[tokio::test]
async fn authentication_type_changes_need_the_current_etag() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);
    let created = registry.create(&sas_device("mig-1")).await.unwrap();
    let key = created
        .authentication
        .symmetric_key
        .primary_key
        .clone()
        .unwrap();

    // sas -> certificateAuthority with the etag the create answered.
    let mut ca = created.clone();
    ca.authentication.kind = AuthenticationType::CertificateAuthority;
    let updated = registry.update(&ca, Some(&created.etag)).await.unwrap();
    assert_eq!(
        updated.authentication.kind,
        AuthenticationType::CertificateAuthority
    );
    assert_eq!(updated.authentication.symmetric_key.primary_key, None);
    assert_eq!(updated.generation_id, created.generation_id);
    assert_ne!(updated.etag, created.etag);

    // The old etag is stale now: 412, and nothing changes.
    let mut self_signed = updated.clone();
    self_signed.authentication.kind = AuthenticationType::SelfSigned;
    self_signed.authentication.x509_thumbprint = X509Thumbprint {
        primary_thumbprint: Some("AB".repeat(32)),
        secondary_thumbprint: None,
    };
    match registry.update(&self_signed, Some(&created.etag)).await {
        Err(HubError::Status {
            status: 412, code, ..
        }) => assert_eq!(code, "PreconditionFailed"),
        other => panic!("expected 412, got {other:?}"),
    }
    assert_eq!(registry.get("mig-1").await.unwrap(), updated);

    // certificateAuthority -> selfSigned with the current etag.
    let now_self = registry
        .update(&self_signed, Some(&updated.etag))
        .await
        .unwrap();
    assert_eq!(now_self.authentication.kind, AuthenticationType::SelfSigned);
    assert_eq!(
        now_self.authentication.x509_thumbprint.primary_thumbprint,
        Some("AB".repeat(32))
    );

    // The SAS key stopped working with the switch.
    let token = device_token("mig-1", &key, now() + 600);
    let (_, code) = common::RawMqtt::connect_with(&e, "mig-1", None, &token, 30).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);

    // A status change stamps statusUpdatedTime; an unconditional update ("*") is taken.
    let mut disabled = now_self.clone();
    disabled.status = DeviceStatus::Disabled;
    let disabled = registry.update(&disabled, None).await.unwrap();
    assert_ne!(disabled.status_updated_time, "0001-01-01T00:00:00");
    e.shutdown().await;
}

#[tokio::test]
async fn connect_refuses_expired_foreign_and_wrongly_signed_tokens() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);
    let d = registry.create(&sas_device("rule-1")).await.unwrap();
    registry.create(&sas_device("rule-2")).await.unwrap();
    let key = d.authentication.symmetric_key.primary_key.unwrap();
    let later = now() + 600;
    let refused = |token: String, id: &'static str| {
        let e = &e;
        async move {
            let (_, code) = common::RawMqtt::connect_with(e, id, None, &token, 30).await;
            code
        }
    };
    let ok = device_token("rule-1", &key, later);
    assert_eq!(refused(ok, "rule-1").await, ConnectReturnCode::Success);
    // Expired a minute ago: refused (no clock skew for device tokens).
    let expired = device_token("rule-1", &key, now() - 60);
    assert_eq!(
        refused(expired, "rule-1").await,
        ConnectReturnCode::NotAuthorized
    );
    // A token for another device, used as this one.
    let foreign = device_token("rule-2", &key, later);
    assert_eq!(
        refused(foreign, "rule-1").await,
        ConnectReturnCode::NotAuthorized
    );
    // A key that is not the device's.
    let wrong = device_token("rule-1", &STANDARD.encode([3u8; 32]), later);
    assert_eq!(
        refused(wrong, "rule-1").await,
        ConnectReturnCode::NotAuthorized
    );
    // The hub's iothubowner policy may sign for any device; another policy name may not.
    let cs = e.hub.connection_string();
    let secret = cs.to_secret_string();
    let policy_key = secret
        .split(';')
        .find_map(|p| p.strip_prefix("SharedAccessKey="))
        .unwrap();
    let resource = format!("{}/devices/rule-2", common::HUB_HOST);
    let sign = |policy: &str| {
        fleetsim::iothub::sas::token(&resource, policy_key, Some(policy), later).unwrap()
    };
    assert_eq!(
        refused(sign(&cs.key_name), "rule-2").await,
        ConnectReturnCode::Success
    );
    let unknown = sign("registryRead");
    assert_eq!(
        refused(unknown, "rule-2").await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(e.hub.device_stats("rule-1").refused, 3);

    // A disabled device is refused with the hub's configured code (3 by default, see
    // hub_connect's disabled-device test for 5).
    registry
        .set_status("rule-1", DeviceStatus::Disabled)
        .await
        .unwrap();
    let token = device_token("rule-1", &key, later);
    assert_eq!(
        refused(token, "rule-1").await,
        ConnectReturnCode::ServiceUnavailable
    );
    e.shutdown().await;
}

#[tokio::test]
async fn a_session_is_severed_when_its_token_expires() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);
    let d = registry.create(&sas_device("short-1")).await.unwrap();
    let key = d.authentication.symmetric_key.primary_key.unwrap();
    let expiry = now() + 3;
    let token = device_token("short-1", &key, expiry);
    let (mut client, code) = common::RawMqtt::connect_with(&e, "short-1", None, &token, 60).await;
    assert_eq!(code, ConnectReturnCode::Success);
    // Alive before the expiry: a ping is answered.
    client.send(rumqttc::mqttbytes::v4::Packet::PingReq).await;
    assert!(matches!(
        client.recv().await,
        Some(rumqttc::mqttbytes::v4::Packet::PingResp)
    ));
    // Then closed, without a word, once `se` passes (the keep-alive is 60 s, so not that).
    let closed = client.recv_within(Duration::from_secs(8)).await;
    assert!(matches!(closed, Some(None)), "{closed:?}");
    assert!(now() >= expiry, "severed before the token expired");
    assert!(!e.hub.is_connected("short-1"));
    assert_eq!(e.hub.device_stats("short-1").drops, 1);
    e.shutdown().await;
}

#[tokio::test]
async fn a_tagged_run_creates_its_sas_identities_tagged_with_generated_keys() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e).with_run_tag(Some("run-24".into()));
    // One call creates the identity with its tag (a bulk create of one); its keys are read back.
    let created = registry.create_sas_tagged("tag-1", None).await.unwrap();
    assert_eq!(created.authentication.kind, AuthenticationType::Sas);
    let key = created.authentication.symmetric_key.primary_key.unwrap();
    assert_eq!(STANDARD.decode(&key).unwrap().len(), 32);
    let twin = e.hub.twin("tag-1").expect("a twin");
    assert_eq!(
        fleetsim::iothub::identity::run_of(&twin.tags),
        Some("run-24")
    );
    // Again: the existing identity is read, with the same key.
    let again = registry.create_sas_tagged("tag-1", None).await.unwrap();
    assert_eq!(again.authentication.symmetric_key.primary_key, Some(key));
    // A key of the device's own is kept.
    let own = STANDARD.encode([5u8; 32]);
    let mine = registry
        .create_sas_tagged("tag-2", Some(own.clone()))
        .await
        .unwrap();
    assert_eq!(mine.authentication.symmetric_key.primary_key, Some(own));
    e.shutdown().await;
}
