//! Who the hub emulator lets in at CONNECT: only a registered, enabled device whose certificate
//! chains to an uploaded CA and names it (CN == ClientId). Everyone else gets CONNACK 5.

mod common;

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
    assert!(old.is_err(), "the old session was dropped");
    assert_eq!(e.hub.device_stats("twice").connects, 2);
    e.shutdown().await;
}
