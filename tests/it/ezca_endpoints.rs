//! Every EZCA endpoint the client speaks, round-tripped against the emulator, and the issued
//! chain checked by an independent implementation (OpenSSL).

use crate::common;

use std::process::Command;

use fleetsim::clock::Clock;
use fleetsim::crypto::{
    CertInfo, DeviceKey, KeyKind, cert_to_pem, certs_from_pem, sha1_thumbprint,
};
use fleetsim::device::CertificateAuthority;
use fleetsim::device::adapters::EzcaCa;
use fleetsim::emulator::ca::IssuingKey;
use fleetsim::ezca::EzcaError;
use fleetsim::ezca::models::{
    CertificateCreateRequest, CertificateCreateRequestV2, SAN_DNS, SAN_EMAIL, SAN_IP,
    SubjectAltValue,
};

#[tokio::test]
async fn full_chain_v2_domains_and_admin_revoke() {
    let e = common::start_emulators(Clock::real()).await;
    let owner = common::ezca(&e).await;
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    owner.register_domain("full-1").await.unwrap();
    owner.register_domain("v2-1").await.unwrap();

    // RequestFullSSLCertificate: the bare response carries the chain.
    let req = CertificateCreateRequest::for_device(
        &owner.ca,
        "full-1",
        key.csr_pem("full-1").unwrap(),
        10,
    );
    let full = owner
        .client
        .request_full_ssl_certificate(&req)
        .await
        .unwrap();
    let leaf = certs_from_pem(&full.certificate_pem).unwrap().remove(0);
    assert_eq!(
        CertInfo::parse(&leaf).unwrap().subject_cn.as_deref(),
        Some("full-1")
    );
    assert_eq!(
        certs_from_pem(&full.issuing_ca_certificate).unwrap()[0],
        e.ca.issuing_der()
    );
    assert_eq!(
        certs_from_pem(&full.root_certificate).unwrap()[0],
        e.ca.root_der()
    );

    // RequestSSLCertificateV2 with typed SANs.
    let v2 = CertificateCreateRequestV2 {
        subject_name: "CN=v2-1".into(),
        subject_alt_names: vec![
            SubjectAltValue {
                value: "v2-1".into(),
                kind: SAN_DNS,
            },
            SubjectAltValue {
                value: "ops@example.com".into(),
                kind: SAN_EMAIL,
            },
            SubjectAltValue {
                value: "127.0.0.9".into(),
                kind: SAN_IP,
            },
        ],
        ca_id: owner.ca.ca_id.clone().unwrap(),
        template_id: owner.ca.template_id.clone().unwrap(),
        csr: key.csr_pem("v2-1").unwrap(),
        validity_in_days: 5,
        ekus: fleetsim::ezca::models::default_ekus(),
        key_usages: fleetsim::ezca::models::default_key_usages(),
        selected_location: "EZCA Go SDK".into(),
        resource_id: String::new(),
        secret_name: String::new(),
        akv_name: String::new(),
        auto_renew: false,
        auto_renew_percentage: 80,
        sid: String::new(),
    };
    let created = owner.client.request_ssl_certificate_v2(&v2).await.unwrap();
    let v2_leaf = certs_from_pem(&created.certificate_pem).unwrap().remove(0);
    let text = openssl(&["x509", "-noout", "-text"], &cert_to_pem(&v2_leaf));
    assert!(
        text.contains("DNS:v2-1")
            && text.contains("email:ops@example.com")
            && text.contains("IP Address:127.0.0.9"),
        "{text}"
    );

    // A V2 request for a domain the caller does not own: 400 with a text body.
    let mut foreign = v2.clone();
    foreign.subject_name = "CN=not-mine".into();
    foreign.subject_alt_names.truncate(0);
    match owner.client.request_ssl_certificate_v2(&foreign).await {
        Err(EzcaError::Status {
            status: 400, body, ..
        }) => {
            assert!(body.starts_with("Error: "), "{body}")
        }
        other => panic!("expected 400, got {other:?}"),
    }

    // GetMyDomains lists exactly the caller's domains.
    let mut domains: Vec<String> = owner
        .client
        .get_my_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.domain)
        .collect();
    domains.sort();
    assert_eq!(domains, ["full-1", "v2-1"]);
    let token = e.ca.mint_token("stranger", "s@example.invalid", 600);
    let stranger = fleetsim::device::adapters::EzcaCa::discover(
        common::ezca_client(&e, &token),
        common::ecdsa_ca(&e).as_deref(),
    )
    .await
    .unwrap();
    assert!(stranger.client.get_my_domains().await.unwrap().is_empty());

    // RevokeCertificateV2 by (lower-case) thumbprint: only the domain's owner may.
    let thumbprint = sha1_thumbprint(&leaf);
    assert!(matches!(
        stranger
            .client
            .revoke_certificate_v2(&stranger.ca, &thumbprint)
            .await,
        Err(EzcaError::Refused(_))
    ));
    assert_eq!(e.ca.is_revoked(&thumbprint), Some(false));
    owner
        .client
        .revoke_certificate_v2(&owner.ca, &thumbprint)
        .await
        .unwrap();
    assert_eq!(e.ca.is_revoked(&thumbprint), Some(true));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_authenticated_renew_v3_legacy_and_self_revoke() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let key = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
    ca.register_domain("dev-rsa").await.unwrap();
    let issued = ca
        .issue("dev-rsa", key.csr_pem("dev-rsa").unwrap(), 10)
        .await
        .unwrap();
    let current = issued.chain[0].clone();

    // V3: a CertificateCreatedResponse (the emulator double-encodes it, as some EZCA endpoints do).
    let next = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
    let v3 = ca
        .client
        .renew_certificate_v3(
            &current,
            &key,
            next.csr_pem_with_sans("dev-rsa", &issued.info.dns_sans)
                .unwrap(),
            10,
        )
        .await
        .unwrap();
    let v3_leaf = certs_from_pem(&v3.certificate_pem).unwrap().remove(0);
    assert_eq!(
        CertInfo::parse(&v3_leaf).unwrap().subject_cn.as_deref(),
        Some("dev-rsa")
    );
    assert_eq!(
        certs_from_pem(&v3.issuing_ca_certificate).unwrap()[0],
        e.ca.issuing_der()
    );

    // Legacy RenewCertificate, the certificate named by x5t alone.
    let legacy = ca
        .client
        .renew_certificate_legacy(&v3_leaf, &next, next.csr_pem("dev-rsa").unwrap(), 10)
        .await
        .unwrap();
    assert_ne!(sha1_thumbprint(&legacy), sha1_thumbprint(&v3_leaf));

    // Self-revocation with the certificate-JWT, after which it can no longer renew.
    ca.client.revoke_certificate(&v3_leaf, &next).await.unwrap();
    assert_eq!(e.ca.is_revoked(&sha1_thumbprint(&v3_leaf)), Some(true));
    match ca
        .client
        .renew_certificate_v2(&v3_leaf, &next, next.csr_pem("dev-rsa").unwrap(), 10)
        .await
    {
        Err(EzcaError::Status {
            status: 400, body, ..
        }) => assert!(body.contains("revoked"), "{body}"),
        other => panic!("expected 400 revoked, got {other:?}"),
    }
    e.shutdown().await;
}

/// Both issuing CAs, each with an ECDSA and an RSA device key: OpenSSL verifies the chain and
/// shows what was requested.
#[tokio::test]
async fn issued_chains_verify_with_openssl() {
    let e = common::start_emulators(Clock::real()).await;
    for (issuing, signature) in [
        (IssuingKey::EcdsaP256, "ecdsa-with-SHA256"),
        (IssuingKey::Rsa2048, "sha256WithRSAEncryption"),
    ] {
        let ca = ezca_of(&e, issuing).await;
        for (kind, id) in [(KeyKind::P256, "ossl-ec"), (KeyKind::Rsa2048, "ossl-rsa")] {
            let id = format!("{id}-{issuing:?}").to_ascii_lowercase();
            let key = DeviceKey::generate(kind).unwrap();
            ca.register_domain(&id).await.unwrap();
            let issued = ca.issue(&id, key.csr_pem(&id).unwrap(), 10).await.unwrap();
            let dir =
                std::env::temp_dir().join(format!("fleetsim-openssl-{}-{id}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("root.pem"), cert_to_pem(&e.ca.root_der())).unwrap();
            std::fs::write(dir.join("issuing.pem"), cert_to_pem(&issued.chain[1])).unwrap();
            std::fs::write(dir.join("leaf.pem"), cert_to_pem(&issued.chain[0])).unwrap();
            let out = Command::new("openssl")
                .current_dir(&dir)
                .args([
                    "verify",
                    "-purpose",
                    "sslclient",
                    "-CAfile",
                    "root.pem",
                    "-untrusted",
                    "issuing.pem",
                    "leaf.pem",
                ])
                .output()
                .expect("openssl is installed");
            let said = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && said.contains("leaf.pem: OK"),
                "{said}"
            );
            let text = openssl(&["x509", "-noout", "-text"], &cert_to_pem(&issued.chain[0]));
            for expected in [
                format!("CN = {id}").as_str(),
                format!("DNS:{id}").as_str(),
                "TLS Web Server Authentication, TLS Web Client Authentication",
                "Digital Signature, Key Encipherment",
                "CA Issuers - URI:https://",
                format!("Signature Algorithm: {signature}").as_str(),
            ] {
                assert!(text.contains(expected), "missing {expected:?} in\n{text}");
            }
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    e.shutdown().await;
}

async fn ezca_of(e: &fleetsim::emulator::Emulators, issuing: IssuingKey) -> EzcaCa {
    let token = e.ca.mint_token("owner-of-both", "o@example.invalid", 600);
    EzcaCa::discover(
        common::ezca_client(e, &token),
        e.ca.ca_id(issuing).as_deref(),
    )
    .await
    .unwrap()
}

/// Like a tenant with several SSL CAs: an ECDSA and an RSA issuing CA under one root, each
/// issuing, serving its certificate at its own AIA URL and listing its own revocations.
#[tokio::test]
async fn an_ecdsa_and_an_rsa_issuing_ca_share_one_root() {
    let e = common::start_emulators(Clock::real()).await;
    let ecdsa = ezca_of(&e, IssuingKey::EcdsaP256).await;
    let rsa = ezca_of(&e, IssuingKey::Rsa2048).await;
    let listed = rsa.client.get_available_ssl_cas().await.unwrap();
    let mut key_types: Vec<_> = listed
        .iter()
        .map(|c| c.key_type.clone().unwrap_or_default())
        .collect();
    key_types.sort();
    assert_eq!(key_types, ["EC P256", "RSA 2048"]);
    assert!(
        listed
            .iter()
            .all(|c| c.template_type.as_deref() == Some("SSL Template"))
    );
    // Without a CaID, a client cannot guess which CA to use.
    let token = e.ca.mint_token("owner-of-both", "o@example.invalid", 600);
    let guess = EzcaCa::discover(common::ezca_client(&e, &token), None).await;
    assert!(
        matches!(&guess, Err(EzcaError::NoCa(m)) if m.contains("2 SSL CAs")),
        "{:?}",
        guess.err()
    );
    // A key type picks the one CA of that kind, without knowing its generated id.
    let by_type = EzcaCa::discover_by(common::ezca_client(&e, &token), None, Some("rsa 2048"))
        .await
        .expect("the RSA CA");
    assert_eq!(by_type.ca.key_type.as_deref(), Some("RSA 2048"));
    let none = EzcaCa::discover_by(common::ezca_client(&e, &token), None, Some("EC P384")).await;
    assert!(
        matches!(&none, Err(EzcaError::NoCa(m)) if m.contains("EC P256, RSA 2048") || m.contains("RSA 2048, EC P256")),
        "{:?}",
        none.err()
    );

    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    rsa.register_domain("multi-1").await.unwrap();
    let from_rsa = rsa
        .issue("multi-1", key.csr_pem("multi-1").unwrap(), 10)
        .await
        .unwrap();
    ecdsa.register_domain("multi-2").await.unwrap();
    let from_ecdsa = ecdsa
        .issue("multi-2", key.csr_pem("multi-2").unwrap(), 10)
        .await
        .unwrap();
    assert_ne!(from_rsa.chain[1], from_ecdsa.chain[1], "two issuing CAs");
    assert_eq!(from_ecdsa.chain[1], e.ca.issuing_der());
    for chain in [&from_rsa.chain, &from_ecdsa.chain] {
        let issuing = CertInfo::parse(&chain[1]).unwrap();
        let root = CertInfo::parse(&e.ca.root_der()).unwrap();
        assert_eq!(issuing.issuer_cn, root.subject_cn, "chains to the one root");
    }

    // A request naming a CA that does not exist is refused the way EZCA refuses it.
    let mut unknown = ecdsa.ca.clone();
    unknown.ca_id = Some(uuid::Uuid::new_v4().to_string());
    let refused = ecdsa
        .client
        .request_ssl_certificate(&CertificateCreateRequest::for_device(
            &unknown,
            "multi-2",
            key.csr_pem("multi-2").unwrap(),
            10,
        ))
        .await;
    assert!(
        matches!(&refused, Err(EzcaError::Refused(m)) if m.contains("CA or template not found")),
        "{refused:?}"
    );

    // Revoking the RSA CA's certificate lists it in that CA's CRL only.
    rsa.client
        .revoke_certificate_v2(&rsa.ca, &sha1_thumbprint(&from_rsa.chain[0]))
        .await
        .unwrap();
    let serial = CertInfo::parse(&from_rsa.chain[0]).unwrap().serial_hex;
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap();
    for (ca, listed) in [(&rsa, true), (&ecdsa, false)] {
        let id = ca.ca.ca_id.clone().unwrap().to_ascii_lowercase();
        let crl = http
            .get(format!("{}crl/{id}.crl", e.ca.url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&crl).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex(r.raw_serial()))
            .collect();
        assert_eq!(
            serials.contains(&hex_trimmed(&serial)),
            listed,
            "{serials:?}"
        );
    }
    e.shutdown().await;
}

fn hex(bytes: &[u8]) -> String {
    hex_trimmed(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn hex_trimmed(s: &str) -> String {
    s.to_ascii_lowercase().trim_start_matches('0').to_string()
}

fn openssl(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

#[tokio::test]
async fn the_served_crl_lists_revoked_serials_and_openssl_refuses_them() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    ca.register_domain("crl-1").await.unwrap();
    let issued = ca
        .issue("crl-1", key.csr_pem("crl-1").unwrap(), 10)
        .await
        .unwrap();
    let leaf_pem = cert_to_pem(&issued.chain[0]);
    let text = openssl(&["x509", "-noout", "-text"], &leaf_pem);
    let crl_url = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("URI:").filter(|u| u.ends_with(".crl")))
        .unwrap_or_else(|| panic!("no CRL distribution point in\n{text}"))
        .to_string();
    ca.client
        .revoke_certificate_v2(&ca.ca, &sha1_thumbprint(&issued.chain[0]))
        .await
        .unwrap();

    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap();
    let crl = http
        .get(&crl_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("fleetsim-crl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("crl.der"), &crl).unwrap();
    std::fs::write(dir.join("root.pem"), cert_to_pem(&e.ca.root_der())).unwrap();
    std::fs::write(dir.join("issuing.pem"), cert_to_pem(&issued.chain[1])).unwrap();
    std::fs::write(dir.join("leaf.pem"), &leaf_pem).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, listing) = run(&["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"]);
    assert!(ok, "{listing}");
    let serial = CertInfo::parse(&issued.chain[0])
        .unwrap()
        .serial_hex
        .to_uppercase();
    assert!(
        listing.to_uppercase().replace(':', "").contains(&serial),
        "serial {serial} not in\n{listing}"
    );
    let (ok, said) = run(&["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]);
    assert!(ok, "{said}");
    let (ok, said) = run(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        "crl.pem",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "issuing.pem",
        "leaf.pem",
    ]);
    assert!(!ok && said.contains("certificate revoked"), "{said}");
    std::fs::remove_dir_all(&dir).ok();
    e.shutdown().await;
}
