//! The EZCA emulator on the wire: bearer tokens are required and checked, replies use EZCA's
//! exact names and wrapping, and requests for names the caller does not own are refused.

use crate::common;

use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::CertificateAuthority;
use fleetsim::ezca::EzcaError;
use fleetsim::ezca::models::CertificateCreateRequest;

fn http(e: &fleetsim::emulator::Emulators) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn requests_without_a_valid_bearer_token_are_refused() {
    let e = common::start_emulators(Clock::real()).await;
    let client = http(&e);
    let url = format!("{}api/CA/GetAvailableSSLCAs", e.ca.url());

    let none = client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.text().await.unwrap().starts_with("Error"));

    let forged = client
        .get(&url)
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.eyJvaWQiOiJ4In0.c2ln")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let post = client
        .post(format!("{}api/CA/RequestSSLCertificate", e.ca.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);

    // With a token the same call answers a bare array with EZCA's field names, at any path case.
    let token = e.ca.mint_token("oid-1", "u@example.invalid", 600);
    let ok = client
        .get(url.to_lowercase())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let cas: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(cas[0]["CATemplateType"], "SSL Template");
    assert!(cas[0]["CAID"].is_string() && cas[0]["TemplateID"].is_string());
    e.shutdown().await;
}

#[tokio::test]
async fn only_owners_of_a_domain_may_request_for_it() {
    let e = common::start_emulators(Clock::real()).await;
    let owner = common::ezca(&e).await;
    let (_key, issued) = common::enrol(&owner, "device-1").await;
    assert_eq!(issued.info.subject_cn.as_deref(), Some("device-1"));
    assert_eq!(
        issued.chain.len(),
        2,
        "leaf and issuing CA (fetched through AIA)"
    );

    // Someone else can neither take over the domain nor request a certificate for it.
    let token = e.ca.mint_token("someone-else", "x@example.invalid", 600);
    let intruder = fleetsim::device::adapters::EzcaCa::discover(
        common::ezca_client(&e, &token),
        common::ecdsa_ca(&e).as_deref(),
    )
    .await
    .unwrap();
    let taken = intruder
        .client
        .register_new_domain(&intruder.ca, "device-1", &intruder.owner)
        .await;
    assert!(matches!(taken, Err(EzcaError::Refused(_))), "{taken:?}");
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    let req = CertificateCreateRequest::for_device(
        &intruder.ca,
        "device-1",
        key.csr_pem("device-1").unwrap(),
        10,
    );
    let refused = intruder.client.request_ssl_certificate(&req).await;
    assert!(
        matches!(refused, Err(EzcaError::Refused(ref m)) if m.contains("device-1")),
        "{refused:?}"
    );

    // Validity beyond the CA's MaxCertLifeDays (30 here) is refused, saying why.
    let req = CertificateCreateRequest::for_device(
        &owner.ca,
        "device-1",
        key.csr_pem("device-1").unwrap(),
        31,
    );
    let too_long = owner.client.request_ssl_certificate(&req).await;
    assert!(
        matches!(too_long, Err(EzcaError::Refused(ref m)) if m.contains("ValidityInDays")),
        "{too_long:?}"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn domain_restrictions_limit_what_can_be_registered() {
    use fleetsim::emulator::{CaConfig, Emulators, HubConfig};
    let ca_config = CaConfig {
        clock: Clock::real(),
        max_cert_life_days: 30,
        capacity: Default::default(),
        allowed_domains: vec!["devices.contoso.com".into()],
        disable_devices_on_revoke: false,
    };
    let e = Emulators::start([127, 0, 0, 1].into(), &ca_config, &HubConfig::default())
        .await
        .unwrap();
    let ca = common::ezca(&e).await;
    assert_eq!(
        ca.ca.domain_restrictions.as_deref(),
        Some("Restricted to: devices.contoso.com")
    );
    ca.register_domain("sensor-1.devices.contoso.com")
        .await
        .expect("under the allowed name");
    match ca
        .client
        .register_new_domain(&ca.ca, "sensor-1.fabrikam.com", &ca.owner)
        .await
    {
        Err(EzcaError::Refused(m)) => assert!(m.contains("domain restrictions"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    e.shutdown().await;
}
