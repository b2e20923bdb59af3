//! Who the hub emulator lets in at CONNECT: only a registered, enabled device whose certificate
//! chains to an uploaded CA and names it (CN == ClientId). Everyone else gets CONNACK 5.

use crate::common;

use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::iothub::HubError;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

fn refused_with_5(result: Result<fleetsim::iothub::mqtt::MqttSession, HubError>) {
    match result {
        Err(HubError::ConnectRefused(code)) => assert_eq!(code, "5"),
        Err(other) => panic!("expected CONNACK 5, got {other}"),
        Ok(_) => panic!("expected CONNACK 5, got a session"),
    }
}

#[tokio::test]
async fn only_registered_devices_with_their_own_trusted_certificate_connect() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let registry = HubRegistry(common::registry(&e));
    let transport = common::transport(&e);

    for id in ["alice", "bob"] {
        registry.register(id).await.expect("register");
    }
    let (alice_key, alice) = common::enrol(&ca, "alice").await;

    // The control: alice with her own certificate is accepted and her telemetry acked.
    let mut session = transport
        .connect("alice", alice.chain.clone(), alice_key.private_key_der())
        .await
        .expect("alice connects");
    session
        .publish(
            "devices/alice/messages/events/".into(),
            b"{}".to_vec(),
            true,
        )
        .await
        .expect("acked");
    session.disconnect().await;
    assert_eq!(e.hub.device_stats("alice").messages, 1);

    // CN differs from the client id: alice's certificate used as bob.
    refused_with_5(
        transport
            .connect("bob", alice.chain.clone(), alice_key.private_key_der())
            .await,
    );

    // A certificate from another CA, even with the right CN.
    let other_ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Some Other CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_issuer = rcgen::Issuer::new(ca_params, other_ca_key);
    let bob_key = DeviceKey::generate(KeyKind::P256).unwrap();
    let bob_pem = bob_key.csr_pem("bob").unwrap();
    let bob_csr = rcgen::CertificateSigningRequestParams::from_pem(&bob_pem).unwrap();
    let mut leaf = rcgen::CertificateSigningRequestParams {
        params: CertificateParams::new(vec!["bob".to_string()]).unwrap(),
        public_key: bob_csr.public_key,
    };
    leaf.params
        .distinguished_name
        .push(DnType::CommonName, "bob");
    leaf.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let foreign = leaf.signed_by(&other_issuer).unwrap();
    refused_with_5(
        transport
            .connect(
                "bob",
                vec![foreign.der().clone()],
                bob_key.private_key_der(),
            )
            .await,
    );

    // A valid certificate for a device the hub does not know.
    let (carol_key, carol) = common::enrol(&ca, "carol").await;
    refused_with_5(
        transport
            .connect("carol", carol.chain.clone(), carol_key.private_key_der())
            .await,
    );

    assert_eq!(e.hub.device_stats("bob").refused, 2);
    assert_eq!(e.hub.device_stats("carol").refused, 1);
    assert_eq!(e.hub.device_stats("alice").refused, 0);
    e.shutdown().await;
}

#[tokio::test]
async fn a_second_connection_drops_the_first() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let registry = HubRegistry(common::registry(&e));
    let transport = common::transport(&e);
    registry.register("twice").await.unwrap();
    let (key, issued) = common::enrol(&ca, "twice").await;

    let mut first = transport
        .connect("twice", issued.chain.clone(), key.private_key_der())
        .await
        .unwrap();
    let mut second = transport
        .connect("twice", issued.chain.clone(), key.private_key_der())
        .await
        .unwrap();
    second
        .publish("devices/twice/messages/events/".into(), b"1".to_vec(), true)
        .await
        .expect("the new session works");
    let old = first
        .publish("devices/twice/messages/events/".into(), b"2".to_vec(), true)
        .await;
    // Closed by the hub, not a PUBACK that never came (a timeout).
    assert!(
        matches!(old, Err(HubError::Closed(_))),
        "the old session was dropped: {old:?}"
    );
    assert_eq!(e.hub.device_stats("twice").connects, 2);
    e.shutdown().await;
}

#[tokio::test]
async fn self_signed_devices_connect_by_thumbprint() {
    use fleetsim::iothub::registry::{AuthenticationType, Device, X509Thumbprint};
    use rumqttc::mqttbytes::v4::ConnectReturnCode;
    let e = common::start_emulators(Clock::real()).await;
    let registry = common::registry(&e);

    let make = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![cn.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        (cert.der().clone(), der)
    };
    let (cert, key) = make("self-1");
    let (other_cert, other_key) = make("self-1");
    let sha256 = fleetsim::crypto::hex_upper(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert).as_ref(),
    );
    let mut device = Device::certificate_authority("self-1");
    device.authentication.kind = AuthenticationType::SelfSigned;
    device.authentication.x509_thumbprint = X509Thumbprint {
        primary_thumbprint: Some(sha256.to_lowercase()),
        secondary_thumbprint: Some(fleetsim::crypto::sha1_thumbprint(&other_cert)),
    };
    registry.create(&device).await.unwrap();

    // Primary (SHA-256, any case) and secondary (SHA-1) thumbprints both match; no chain needed.
    let (_, code) =
        common::RawMqtt::connect_with(&e, "self-1", Some((vec![cert], key)), "", 30).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (_, code) =
        common::RawMqtt::connect_with(&e, "self-1", Some((vec![other_cert], other_key)), "", 30)
            .await;
    assert_eq!(code, ConnectReturnCode::Success);
    // A third certificate with the same CN does not.
    let (stranger, stranger_key) = make("self-1");
    let (_, code) =
        common::RawMqtt::connect_with(&e, "self-1", Some((vec![stranger], stranger_key)), "", 30)
            .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    e.shutdown().await;
}

#[tokio::test]
async fn sas_devices_connect_with_a_token_as_password() {
    use fleetsim::iothub::registry::{AuthenticationType, Device, SymmetricKey};
    use rumqttc::mqttbytes::v4::ConnectReturnCode;
    let e = common::start_emulators(Clock::real()).await;
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let mut device = Device::certificate_authority("sas-1");
    device.authentication.kind = AuthenticationType::Sas;
    device.authentication.symmetric_key = SymmetricKey {
        primary_key: Some(key.into()),
        secondary_key: None,
    };
    common::registry(&e).create(&device).await.unwrap();

    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let resource = format!("{}/devices/sas-1", common::HUB_HOST);
    let token = fleetsim::iothub::sas::token(&resource, key, None, expiry).unwrap();
    let (_, code) = common::RawMqtt::connect_with(&e, "sas-1", None, &token, 30).await;
    assert_eq!(code, ConnectReturnCode::Success);

    let wrong = fleetsim::iothub::sas::token(
        &resource,
        "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        None,
        expiry,
    )
    .unwrap();
    let (_, code) = common::RawMqtt::connect_with(&e, "sas-1", None, &wrong, 30).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let expired = fleetsim::iothub::sas::token(&resource, key, None, 1_000).unwrap();
    let (_, code) = common::RawMqtt::connect_with(&e, "sas-1", None, &expired, 30).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    e.shutdown().await;
}

#[tokio::test]
async fn a_disabled_device_gets_connack_3_or_5_as_configured() {
    use fleetsim::emulator::HubConfig;
    use fleetsim::iothub::registry::DeviceStatus;
    for (configured, expected) in [(3u8, "3"), (5, "5")] {
        let hub = HubConfig {
            disabled_connack: configured,
            ..HubConfig::default()
        };
        let e = common::start_emulators_with(Clock::real(), hub).await;
        let ca = common::ezca(&e).await;
        HubRegistry(common::registry(&e))
            .register("off")
            .await
            .unwrap();
        common::registry(&e)
            .set_status("off", DeviceStatus::Disabled)
            .await
            .unwrap();
        let (key, issued) = common::enrol(&ca, "off").await;
        match common::transport(&e)
            .connect("off", issued.chain.clone(), key.private_key_der())
            .await
        {
            Err(HubError::ConnectRefused(code)) => assert_eq!(code, expected),
            Err(other) => panic!("expected CONNACK {expected}, got {other}"),
            Ok(_) => panic!("a disabled device connected"),
        }
        e.shutdown().await;
    }
}

#[tokio::test]
async fn a_ca_uploaded_through_the_admin_endpoint_is_trusted_only_after_proof_of_possession() {
    let e = common::start_emulators(Clock::real()).await;
    let registry = HubRegistry(common::registry(&e));
    registry.register("partner-1").await.unwrap();

    // A partner CA the hub does not know yet.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Partner Root");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let device_key = DeviceKey::generate(KeyKind::P256).unwrap();
    let csr =
        rcgen::CertificateSigningRequestParams::from_pem(&device_key.csr_pem("partner-1").unwrap())
            .unwrap();
    let mut leaf = rcgen::CertificateSigningRequestParams {
        params: CertificateParams::new(vec!["partner-1".to_string()]).unwrap(),
        public_key: csr.public_key,
    };
    leaf.params
        .distinguished_name
        .push(DnType::CommonName, "partner-1");
    leaf.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf.signed_by(&issuer).unwrap();
    let transport = common::transport(&e);
    refused_with_5(
        transport
            .connect(
                "partner-1",
                vec![leaf.der().clone()],
                device_key.private_key_der(),
            )
            .await,
    );

    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap();
    let url = format!(
        "{}/certificates/partner?api-version=2021-04-12",
        e.hub_registry_url
    );
    // Asking for `isVerified` on upload does not skip the proof of possession here.
    let body =
        serde_json::json!({"properties": {"certificate": ca_cert.pem(), "isVerified": true}});
    let unauthenticated = http.put(&url).json(&body).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let token = e.hub.mint_token("admin", 600);
    let uploaded = http
        .put(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 200);
    let reply: serde_json::Value = uploaded.json().await.unwrap();
    assert_eq!(reply["properties"]["subject"], "Partner Root");
    assert_eq!(reply["properties"]["isVerified"], false);
    refused_with_5(
        transport
            .connect(
                "partner-1",
                vec![leaf.der().clone()],
                device_key.private_key_der(),
            )
            .await,
    );

    // The proof of possession, through the management resource as for Azure.
    use fleetsim::iothub::management::{ManagementAuth, ManagementClient};
    let resource = format!(
        "{}/subscriptions/0/resourceGroups/g/providers/Microsoft.Devices/IotHubs/h",
        e.hub_registry_url
    );
    let client = ManagementClient::new(
        &resource,
        ManagementAuth::Bearer(token),
        std::slice::from_ref(&e.tls_root),
        true,
    )
    .unwrap();
    let ca = client.get_ca("partner").await.unwrap();
    assert!(!ca.properties.is_verified);
    let stale = client.verification_code("partner", "not-the-etag").await;
    assert!(
        matches!(
            stale,
            Err(fleetsim::iothub::HubError::Status { status: 412, .. })
        ),
        "{stale:?}"
    );
    let (code, etag) = client.verification_code("partner", &ca.etag).await.unwrap();
    let ca_key_pem = issuer.key().serialize_pem();
    // A certificate for another code, and one for the code signed by another key, prove nothing.
    let wrong_code = fleetsim::crypto::verification::verification_certificate(
        &ca_cert.pem(),
        &ca_key_pem,
        "0000",
    )
    .unwrap();
    let refused = client.verify("partner", &etag, &wrong_code).await;
    assert!(
        matches!(
            refused,
            Err(fleetsim::iothub::HubError::Status { status: 400, .. })
        ),
        "{refused:?}"
    );
    let other_key = KeyPair::generate().unwrap();
    let forged = fleetsim::crypto::verification::verification_certificate(
        &ca_cert.pem(),
        &other_key.serialize_pem(),
        &code,
    )
    .unwrap();
    let refused = client.verify("partner", &etag, &forged).await;
    assert!(
        format!("{refused:?}").contains("not signed by this CA"),
        "{refused:?}"
    );
    let proof = fleetsim::crypto::verification::verification_certificate(
        &ca_cert.pem(),
        &ca_key_pem,
        &code,
    )
    .unwrap();
    let verified = client.verify("partner", &etag, &proof).await.unwrap();
    assert!(verified.properties.is_verified);

    let session = transport
        .connect(
            "partner-1",
            vec![leaf.der().clone()],
            device_key.private_key_der(),
        )
        .await;
    assert!(
        session.is_ok(),
        "trusted after the upload: {:?}",
        session.err()
    );
    e.shutdown().await;
}
