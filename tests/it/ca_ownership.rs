//! The CA's ownership rules against a hostile caller (issue #18): the name checked is exactly the
//! name certified (the subject's one CN and every SAN, of every kind), whatever the syntax of
//! `SubjectName`; renewals keep every SAN; subjects and SANs stay within the template's sizes.

use crate::common;

use fleetsim::clock::Clock;
use fleetsim::crypto::{CertInfo, DeviceKey, KeyKind, certs_from_pem};
use fleetsim::device::CertificateAuthority;
use fleetsim::device::adapters::EzcaCa;
use fleetsim::emulator::Emulators;
use fleetsim::ezca::EzcaError;
use fleetsim::ezca::models::{
    CertificateCreateRequest, CertificateCreateRequestV2, SAN_DNS, SAN_EMAIL, SAN_IP, SAN_URI,
    SubjectAltValue,
};

/// The attacker owns `mine-1`; someone else owns `victim-1`.
async fn attacker_and_victim(e: &Emulators) -> EzcaCa {
    let attacker = common::ezca(e).await;
    let token = e.ca.mint_token(
        "99999999-8888-7777-6666-555555555555",
        "victim@example.invalid",
        3600,
    );
    let victim = EzcaCa::discover(
        common::ezca_client(e, &token),
        common::ecdsa_ca(e).as_deref(),
    )
    .await
    .unwrap();
    victim.register_domain("victim-1").await.unwrap();
    attacker.register_domain("mine-1").await.unwrap();
    attacker
}

fn v1(ca: &EzcaCa, subject: &str, sans: &[&str]) -> CertificateCreateRequest {
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    let mut req = CertificateCreateRequest::for_device(&ca.ca, "x", key.csr_pem("x").unwrap(), 5);
    req.subject_name = subject.into();
    req.subject_alt_names = sans.iter().map(|s| s.to_string()).collect();
    req
}

fn v2(ca: &EzcaCa, subject: &str, sans: &[(i64, &str)]) -> CertificateCreateRequestV2 {
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    CertificateCreateRequestV2 {
        subject_name: subject.into(),
        subject_alt_names: sans
            .iter()
            .map(|(kind, value)| SubjectAltValue {
                value: value.to_string(),
                kind: *kind,
            })
            .collect(),
        ca_id: ca.ca.ca_id.clone().unwrap(),
        template_id: ca.ca.template_id.clone().unwrap(),
        csr: key.csr_pem("x").unwrap(),
        validity_in_days: 5,
        ekus: fleetsim::ezca::models::default_ekus(),
        key_usages: fleetsim::ezca::models::default_key_usages(),
        selected_location: "test".into(),
        resource_id: String::new(),
        secret_name: String::new(),
        akv_name: String::new(),
        auto_renew: false,
        auto_renew_percentage: 80,
        sid: String::new(),
    }
}

/// A V1 request that must be refused; shows what was certified when it was not.
async fn refused_v1(ca: &EzcaCa, subject: &str, sans: &[&str]) {
    match ca
        .client
        .request_ssl_certificate(&v1(ca, subject, sans))
        .await
    {
        Err(EzcaError::Refused(_)) => {}
        Ok(leaf) => panic!(
            "{subject:?} {sans:?} was certified as {:?}",
            CertInfo::parse(&leaf).unwrap().subject_cn
        ),
        Err(other) => panic!("{subject:?}: expected Success:false, got {other:?}"),
    }
}

/// A V2 request that must be refused with 400 and an `Error:` text.
async fn refused_v2(ca: &EzcaCa, subject: &str, sans: &[(i64, &str)]) {
    match ca
        .client
        .request_ssl_certificate_v2(&v2(ca, subject, sans))
        .await
    {
        Err(EzcaError::Status {
            status: 400, body, ..
        }) => assert!(body.starts_with("Error: "), "{body}"),
        Ok(created) => panic!(
            "{subject:?} {sans:?} was certified: {}",
            created.certificate_pem
        ),
        Err(other) => panic!("{subject:?} {sans:?}: expected 400, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_common_name_is_refused() {
    let e = common::start_emulators(Clock::real()).await;
    let attacker = attacker_and_victim(&e).await;
    refused_v1(&attacker, "CN=mine-1, CN=victim-1", &["mine-1"]).await;
    refused_v1(&attacker, "CN=mine-1,CN=victim-1", &[]).await;
    refused_v1(&attacker, "CN=victim-1, CN=mine-1", &[]).await;
    refused_v1(&attacker, "CN=mine-1, CN=mine-1", &[]).await;
    refused_v2(&attacker, "CN=mine-1, CN=victim-1", &[]).await;
    // The one CN the attacker owns is still certified.
    let leaf = attacker
        .client
        .request_ssl_certificate(&v1(&attacker, "CN=mine-1", &["mine-1"]))
        .await
        .unwrap();
    assert_eq!(
        CertInfo::parse(&leaf).unwrap().subject_cn.as_deref(),
        Some("mine-1")
    );
    e.shutdown().await;
}

#[tokio::test]
async fn multi_valued_rdns_are_refused() {
    let e = common::start_emulators(Clock::real()).await;
    let attacker = attacker_and_victim(&e).await;
    refused_v1(&attacker, "CN=mine-1+CN=victim-1", &[]).await;
    refused_v1(&attacker, "CN=mine-1, O=x+CN=victim-1", &[]).await;
    refused_v1(&attacker, "CN=mine-1+O=Contoso", &[]).await;
    refused_v1(&attacker, "CN=mine-1;CN=victim-1", &[]).await;
    e.shutdown().await;
}

#[tokio::test]
async fn escaped_separators_belong_to_one_value() {
    let e = common::start_emulators(Clock::real()).await;
    let attacker = attacker_and_victim(&e).await;
    // A name ending in a backslash must not let `\,` split the subject in two.
    attacker.register_domain("mine-1\\").await.unwrap();
    refused_v1(&attacker, "CN=mine-1\\, CN=victim-1", &[]).await;
    refused_v1(&attacker, "CN=mine-1\\2C CN=victim-1", &[]).await;
    refused_v1(&attacker, "CN=\"mine-1, CN=victim-1\"", &[]).await;
    // Escaped and quoted separators are one value: the CN is exactly the owned name.
    attacker.register_domain("a,b+c").await.unwrap();
    for subject in ["CN=a\\,b\\+c", "CN=\"a,b+c\"", "CN=a\\2Cb\\2Bc, O=Contoso"] {
        let leaf = attacker
            .client
            .request_ssl_certificate(&v1(&attacker, subject, &[]))
            .await
            .unwrap_or_else(|err| panic!("{subject}: {err}"));
        assert_eq!(
            CertInfo::parse(&leaf).unwrap().subject_cn.as_deref(),
            Some("a,b+c"),
            "{subject}"
        );
    }
    e.shutdown().await;
}

#[tokio::test]
async fn every_subject_alternative_name_is_owned() {
    let e = common::start_emulators(Clock::real()).await;
    let attacker = attacker_and_victim(&e).await;
    refused_v1(&attacker, "CN=mine-1", &["victim-1"]).await;
    refused_v1(&attacker, "CN=mine-1", &["mine-1", "VICTIM-1"]).await;
    refused_v2(&attacker, "CN=mine-1", &[(SAN_DNS, "victim-1")]).await;
    refused_v2(&attacker, "CN=mine-1", &[(SAN_EMAIL, "ops@victim-1")]).await;
    refused_v2(
        &attacker,
        "CN=mine-1",
        &[(SAN_EMAIL, "ops@mine-1@victim-1")],
    )
    .await;
    refused_v2(&attacker, "CN=mine-1", &[(SAN_IP, "127.0.0.9")]).await;
    refused_v2(&attacker, "CN=mine-1", &[(SAN_URI, "https://victim-1/x")]).await;
    refused_v2(&attacker, "CN=mine-1", &[(SAN_URI, "urn:victim-1")]).await;
    // What the caller owns is certified, every kind of SAN included.
    attacker.register_domain("127.0.0.7").await.unwrap();
    let owned = [
        (SAN_DNS, "mine-1"),
        (SAN_EMAIL, "ops@mine-1"),
        (SAN_IP, "127.0.0.7"),
        (SAN_URI, "spiffe://mine-1/device"),
    ];
    let created = attacker
        .client
        .request_ssl_certificate_v2(&v2(&attacker, "CN=mine-1", &owned))
        .await
        .unwrap();
    let leaf = certs_from_pem(&created.certificate_pem).unwrap().remove(0);
    assert_eq!(CertInfo::parse(&leaf).unwrap().dns_sans, vec!["mine-1"]);
    e.shutdown().await;
}

#[tokio::test]
async fn a_renewal_keeps_every_san() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let key = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
    ca.register_domain("renew-1").await.unwrap();
    let issued = ca
        .issue("renew-1", key.csr_pem("renew-1").unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(issued.info.dns_sans, vec!["renew-1"]);
    let next = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
    for csr in [
        next.csr_pem("renew-1").unwrap(),
        next.csr_pem_with_sans("renew-1", &["renew-1".into(), "other".into()])
            .unwrap(),
        next.csr_pem_with_sans("renew-2", &["renew-1".into()])
            .unwrap(),
    ] {
        match ca
            .client
            .renew_certificate_v2(&issued.chain[0], &key, csr, 10)
            .await
        {
            Err(EzcaError::Status {
                status: 400, body, ..
            }) => assert!(body.contains("does not match"), "{body}"),
            other => panic!("expected 400 CSR mismatch, got {other:?}"),
        }
    }
    let renewed = ca
        .client
        .renew_certificate_v2(
            &issued.chain[0],
            &key,
            next.csr_pem_with_sans("renew-1", &issued.info.dns_sans)
                .unwrap(),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        CertInfo::parse(&renewed).unwrap().dns_sans,
        issued.info.dns_sans
    );
    e.shutdown().await;
}

#[tokio::test]
async fn subjects_and_sans_stay_within_the_template() {
    let e = common::start_emulators(Clock::real()).await;
    let attacker = attacker_and_victim(&e).await;
    let long_o = format!("CN=mine-1, O={}", "x".repeat(65));
    refused_v1(&attacker, &long_o, &[]).await;
    refused_v1(&attacker, "CN=mine-1, C=Sweden", &[]).await;
    refused_v1(&attacker, "CN=mine-1, O=a, O=b", &[]).await;
    refused_v1(&attacker, "CN=mine-1, SERIALNUMBER=1", &[]).await;
    refused_v1(&attacker, "CN=mine-1, O=", &[]).await;
    refused_v1(&attacker, "CN=mine-1, O=a\u{0}b", &[]).await;
    let long_cn = "d".repeat(129);
    attacker.register_domain(&long_cn).await.unwrap();
    refused_v1(&attacker, &format!("CN={long_cn}"), &[]).await;
    let many: Vec<&str> = std::iter::repeat_n("mine-1", 101).collect();
    refused_v1(&attacker, "CN=mine-1", &many).await;
    let long_dns = format!("{}.mine-1", "a".repeat(64));
    attacker.register_domain(&long_dns).await.unwrap();
    refused_v1(&attacker, "CN=mine-1", &[&long_dns]).await;
    // Within the limits, every attribute the template allows goes into the certificate.
    let leaf = attacker
        .client
        .request_ssl_certificate(&v1(
            &attacker,
            &format!(
                "CN=mine-1, O={}, OU=Fleet, L=Lund, ST=Skane, C=SE",
                "o".repeat(64)
            ),
            &["mine-1"],
        ))
        .await
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let subject = cert.subject().to_string();
    assert!(
        subject.contains("C=SE") && subject.contains("OU=Fleet"),
        "{subject}"
    );
    e.shutdown().await;
}
