//! Renewal authenticated by the certificate (RenewCertificateV2 with an RS256 certificate-JWT),
//! and every way the EZCA emulator refuses it, with the status and body a real client would see.

use crate::common;

use fleetsim::clock::Clock;
use fleetsim::crypto::jwt::{self, Claims};
use fleetsim::crypto::{DeviceKey, KeyKind, cert_to_pem, sha1_thumbprint};
use fleetsim::device::{CertificateAuthority, Issued};
use fleetsim::emulator::Emulators;
use fleetsim::scenario::Renewal;

async fn rsa_device(ca: &fleetsim::device::adapters::EzcaCa, id: &str) -> (DeviceKey, Issued) {
    let key = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
    ca.register_domain(id).await.unwrap();
    let issued = ca.issue(id, key.csr_pem(id).unwrap(), 10).await.unwrap();
    (key, issued)
}

/// POSTs a renewal with `token` for `cert_der` and `csr`; returns status and body.
async fn renew_raw(e: &Emulators, token: &str, cert_der: &[u8], csr: &str) -> (u16, String) {
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
        .build()
        .unwrap();
    let body = serde_json::json!({
        "Certificate": cert_to_pem(cert_der),
        "Payload": { "CSR": csr, "ValidityInDays": 10 },
    });
    let resp = http
        .post(format!("{}api/Certificates/RenewCertificateV2", e.ca.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn claims(aud: &str, nbf: u64, exp: u64) -> Claims {
    Claims {
        aud: Some(aud.into()),
        jti: Some(uuid::Uuid::new_v4().to_string()),
        nbf: Some(nbf),
        exp: Some(exp),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_the_certificate_and_its_refusals() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    let (key, current) = rsa_device(&ca, "rsa-1").await;
    let (other_key, other) = rsa_device(&ca, "rsa-2").await;
    let leaf = current.chain[0].to_vec();

    // The client path: a new key, a CSR with the same names, signed token from the old key.
    let new_key = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
    let csr = new_key
        .csr_pem_with_sans("rsa-1", &current.info.dns_sans)
        .unwrap();
    let renewed = ca
        .renew(
            "rsa-1",
            &current,
            &key,
            csr.clone(),
            10,
            Renewal::Certificate,
        )
        .await
        .expect("renewed");
    assert_eq!(renewed.info.subject_cn.as_deref(), Some("rsa-1"));
    assert_eq!(renewed.info.dns_sans, current.info.dns_sans);
    assert_ne!(renewed.info.serial_hex, current.info.serial_hex);
    assert_eq!(renewed.chain.len(), 2);

    let now = jwt::now();
    let expect = |got: (u16, String), status: u16, words: &str| {
        assert_eq!(got.0, status, "{}", got.1);
        assert!(
            got.1.starts_with("Error: ") && got.1.contains(words),
            "{:?} should mention {words:?}",
            got.1
        );
    };

    // Replayed jti.
    let token = jwt::sign(&leaf, &key).unwrap();
    assert_eq!(renew_raw(&e, &token, &leaf, &csr).await.0, 200);
    expect(renew_raw(&e, &token, &leaf, &csr).await, 401, "replay");

    // x5t naming another certificate than the one sent.
    let token = jwt::sign_claims(
        &sha1_thumbprint(&other.chain[0]),
        &claims(jwt::AUDIENCE, now, now + 600),
        &key,
    )
    .unwrap();
    expect(renew_raw(&e, &token, &leaf, &csr).await, 401, "x5t");
    // Another certificate's x5t and body, but signed with this device's key.
    let token = jwt::sign_claims(
        &sha1_thumbprint(&other.chain[0]),
        &claims(jwt::AUDIENCE, now, now + 600),
        &key,
    )
    .unwrap();
    expect(
        renew_raw(&e, &token, &other.chain[0], &csr).await,
        401,
        "signature",
    );
    let _ = other_key;

    // Expired token, wrong audience.
    let x5t = sha1_thumbprint(&leaf);
    let token =
        jwt::sign_claims(&x5t, &claims(jwt::AUDIENCE, now - 7200, now - 3600), &key).unwrap();
    expect(renew_raw(&e, &token, &leaf, &csr).await, 401, "expired");
    let token =
        jwt::sign_claims(&x5t, &claims("https://example.com", now, now + 600), &key).unwrap();
    expect(renew_raw(&e, &token, &leaf, &csr).await, 401, "audience");

    // A CSR for another subject.
    let wrong = new_key
        .csr_pem_with_sans("rsa-2", &["rsa-2".to_string()])
        .unwrap();
    expect(
        renew_raw(&e, &jwt::sign(&leaf, &key).unwrap(), &leaf, &wrong).await,
        400,
        "CSR does not match certificate",
    );

    // A CSR whose signature does not verify.
    let tampered = csr.replacen("MII", "MIJ", 1);
    let got = renew_raw(&e, &jwt::sign(&leaf, &key).unwrap(), &leaf, &tampered).await;
    assert_eq!(got.0, 400, "{}", got.1);

    // A revoked certificate cannot renew.
    assert!(e.ca.revoke(&x5t));
    expect(
        renew_raw(&e, &jwt::sign(&leaf, &key).unwrap(), &leaf, &csr).await,
        400,
        "revoked",
    );

    // Without any token.
    let got = renew_raw(&e, "", &leaf, &csr).await;
    assert_eq!(got.0, 401);
    e.shutdown().await;
}
