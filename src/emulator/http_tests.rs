//! The bounded HTTP serving against raw TLS clients on loopback: what a hostile client gets
//! (refusal before its body, 413, 408, closed slow or idle connections) and what a normal one
//! keeps (a slow handler is not cut off by the idle timeout).

use super::*;
use crate::emulator::listener::ListenerCounters;
use crate::emulator::tls::{ServerPki, https_config};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Server {
    addr: std::net::SocketAddr,
    root: CertificateDer<'static>,
    stop: CancellationToken,
}

const SHORT: HttpLimits = HttpLimits {
    header_read_timeout: Duration::from_millis(400),
    body_timeout: Duration::from_millis(400),
    idle_timeout: Duration::from_millis(400),
    max_header_bytes: 16 * 1024,
    max_streams: 8,
    max_connections: 16,
};

/// A server whose gate wants `Authorization: yes`, whose `/small` takes 10 bytes and `/big`
/// 1000, and whose `/slow` answers after 1.2 s (three idle timeouts).
async fn start() -> Server {
    crate::crypto::install_crypto_provider();
    let pki = ServerPki::new("http test").unwrap();
    let config = https_config(pki.issue_server(&["127.0.0.1".into()]).unwrap()).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/small", axum::routing::post(|b: Bytes| async move { b }))
        .route("/big", axum::routing::post(|b: Bytes| async move { b }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                "done"
            }),
        );
    let gate: Gate = Arc::new(
        |parts: &Parts| match parts.headers.get(header::AUTHORIZATION) {
            Some(v) if v == "yes" => Ok(()),
            _ => Err(Box::new(
                (StatusCode::UNAUTHORIZED, "Error: who are you").into_response(),
            )),
        },
    );
    let options = HttpOptions::default()
        .with_limits(SHORT)
        .with_gate(gate)
        .with_body_limits(Arc::new(|_, path| if path == "/big" { 1000 } else { 10 }));
    let listener = Listener::new(tcp, config)
        .with_policy(options.policy())
        .counting(Arc::new(ListenerCounters::default()));
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(serve(listener, router, options, async move {
        stopped.cancelled().await
    }));
    Server {
        addr,
        root: pki.root_der(),
        stop,
    }
}

async fn connect(s: &Server, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(s.addr.ip().into()), tcp)
        .await
        .unwrap()
}

/// Everything the server sends until it closes (or 3 s pass: then `None`).
async fn read_to_close(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_refused_request_is_answered_before_its_body_and_closed() {
    let s = start().await;
    let mut tls = connect(&s, b"http/1.1").await;
    // 10 MB announced, not one byte of it sent: the gate answers from the headers.
    let head = "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut tls)
        .await
        .expect("closed after the answer");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    s.stop.cancel();
}

#[tokio::test]
async fn bodies_over_their_routes_limit_get_413() {
    let s = start().await;
    // Declared too large for /small, though /big would take it.
    let mut tls = connect(&s, b"http/1.1").await;
    let head =
        "POST /small HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\nContent-Length: 11\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut tls).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Chunked, growing past the limit while read.
    let mut tls = connect(&s, b"http/1.1").await;
    let head =
        "POST /big HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\nTransfer-Encoding: chunked\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("258\r\n{}\r\n", "a".repeat(600));
    let _ = tls.write_all(chunk.as_bytes()).await;
    let _ = tls.write_all(chunk.as_bytes()).await;
    let answer = read_to_close(&mut tls).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Within the limit: served, and the connection stays open for the next request.
    let mut tls = connect(&s, b"http/1.1").await;
    let request =
        "POST /big HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\nContent-Length: 5\r\n\r\nhello";
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
        "{answer}"
    );
    s.stop.cancel();
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let s = start().await;
    let mut tls = connect(&s, b"http/1.1").await;
    let head =
        "POST /big HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\nContent-Length: 100\r\n\r\nabc";
    tls.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut tls).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    s.stop.cancel();
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let s = start().await;
    // Slowloris: one header line every 150 ms never completes the head in time.
    let mut slow = connect(&s, b"http/1.1").await;
    let started = Instant::now();
    slow.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
    let mut closed = false;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let line = format!("X-Line-{i}: a\r\n");
        if slow.write_all(line.as_bytes()).await.is_err() || slow.flush().await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris client was still connected after 3 s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Idle after TLS, on either protocol: closed after the timeouts.
    for alpn in [b"http/1.1".as_slice(), b"h2"] {
        let mut idle = connect(&s, alpn).await;
        let started = Instant::now();
        assert!(
            read_to_close(&mut idle).await.is_some(),
            "idle {alpn:?} left open"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    s.stop.cancel();
}

#[tokio::test]
async fn a_request_in_flight_outlives_the_idle_timeout() {
    let s = start().await;
    let mut tls = connect(&s, b"http/1.1").await;
    let head = "GET /slow HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
        "{answer}"
    );
    s.stop.cancel();
}
