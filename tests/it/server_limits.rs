//! Every HTTP server of the emulators (the CA, the hub's registry, DPS's service API) against a
//! client that announces a large body (issue #18): without credentials it is answered 401 from
//! its headers, before it sends a byte of the body; with credentials, a body over the route's
//! limit is refused with 413 before it is read.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::emulator::{DpsAddresses, DpsConfig, Emulators};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (a request line and headers, no body) over HTTP/1.1 and returns what the server
/// answers before it closes the connection; panics if it waits for the body for 5 s.
async fn answer_to_head(e: &Emulators, url: &str, head: &str) -> String {
    let addr: std::net::SocketAddr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server waited for the body of {head:?}");
    String::from_utf8_lossy(&out).into_owned()
}

fn head(method: &str, path: &str, auth: Option<&str>, length: usize) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn unauthenticated_bodies_are_never_read_and_large_ones_are_refused() {
    let mut e = common::start_emulators(Clock::real()).await;
    e.start_dps(
        DpsAddresses::ephemeral([127, 0, 0, 1].into()),
        &DpsConfig::default(),
    )
    .await
    .unwrap();
    let two_mb = 2_000_000;
    let ca = e.ca.url().to_string();
    let registry = e.hub_registry_url.clone();
    let dps = e.dps.as_ref().unwrap().service_url.clone();
    let api = "?api-version=2021-04-12";

    // No credentials (or forged ones): 401 from the headers alone.
    for (url, path, auth) in [
        (&ca, "/api/CA/RequestSSLCertificate".to_string(), None),
        (
            &ca,
            "/api/CA/RequestSSLCertificate".into(),
            Some("Bearer x.y.z"),
        ),
        (&ca, "/api/Certificates/RenewCertificateV2".into(), None),
        (&registry, format!("/devices/d1{api}"), None),
        (&registry, format!("/devices{api}"), Some("Bearer forged")),
        (&dps, format!("/enrollmentGroups/g1{api}"), None),
    ] {
        let answer = answer_to_head(&e, url, &head("PUT", &path, auth, two_mb)).await;
        let method_answer = answer_to_head(&e, url, &head("POST", &path, auth, two_mb)).await;
        for a in [answer, method_answer] {
            assert!(a.starts_with("HTTP/1.1 401"), "{path}: {a}");
        }
    }

    // With credentials: over the route's limit, 413 before the body.
    let ca_token = format!(
        "Bearer {}",
        e.ca.mint_token("oid-1", "u@example.invalid", 600)
    );
    let hub_sas = e.hub.connection_string().sas_token(u64::MAX / 2).unwrap();
    let dps_sas = e
        .dps
        .as_ref()
        .unwrap()
        .emulator
        .connection_string()
        .sas_token(u64::MAX / 2)
        .unwrap();
    for (url, method, path, auth) in [
        (
            &ca,
            "POST",
            "/api/CA/RequestSSLCertificate".to_string(),
            &ca_token,
        ),
        (&registry, "PUT", format!("/devices/d1{api}"), &hub_sas),
        (&registry, "POST", format!("/devices{api}"), &hub_sas),
        (&dps, "PUT", format!("/enrollmentGroups/g1{api}"), &dps_sas),
    ] {
        let answer = answer_to_head(&e, url, &head(method, &path, Some(auth), two_mb)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
    }
    e.shutdown().await;
}
