//! The accept loop against real TLS clients on loopback: serving, draining, refused handshakes,
//! panicking handlers, the connection cap.

use super::*;
use crate::emulator::tls::{ServerPki, https_config};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    addr: std::net::SocketAddr,
    root: CertificateDer<'static>,
    counters: Arc<ListenerCounters>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start<H, F>(policy: Policy, handle: H) -> Server
where
    H: Fn(TlsStream<TcpStream>, CancellationToken) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    crate::crypto::install_crypto_provider();
    let pki = ServerPki::new("listener test").unwrap();
    let config = https_config(pki.issue_server(&["127.0.0.1".into()]).unwrap()).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let counters = Arc::new(ListenerCounters::default());
    let stop = CancellationToken::new();
    let listener = Listener::new(tcp, config)
        .with_policy(policy)
        .counting(counters.clone());
    let stopped = stop.clone();
    let task = tokio::spawn(listener.serve(async move { stopped.cancelled().await }, handle));
    Server {
        addr,
        root: pki.root_der(),
        counters,
        stop,
        task,
    }
}

/// Echoes until EOF or until the server closes.
async fn echo(mut tls: TlsStream<TcpStream>, closing: CancellationToken) {
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = closing.cancelled() => break,
            n = tls.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = tls.shutdown().await;
}

async fn connect(s: &Server) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_connect(s.addr, s.root.clone()).await
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    root: CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap()
}

async fn round_trip(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) {
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn serves_connections_and_closes_them_on_shutdown() {
    let s = start(Policy::default(), echo).await;
    let mut tls = connect(&s).await;
    round_trip(&mut tls).await;
    // A client that never starts its handshake is not waited for either.
    let _silent = TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    s.stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), s.task)
        .await
        .expect("open connections close when told to")
        .unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        tls.read(&mut buf).await.unwrap_or(0),
        0,
        "closed by the server"
    );
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "no longer listening"
    );
    let stats = s.counters.snapshot();
    assert_eq!((stats.accepted, stats.handshakes_failed), (2, 0));
}

#[tokio::test]
async fn failed_handshakes_are_counted_and_the_server_carries_on() {
    let policy = Policy {
        handshake_timeout: Duration::from_millis(200),
        ..Policy::default()
    };
    let s = start(policy, echo).await;
    let mut plain = TcpStream::connect(s.addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _silent = TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.counters.snapshot().handshakes_failed, 2);

    round_trip(&mut connect(&s).await).await;
    s.stop.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn connections_that_ignore_closing_are_aborted_after_the_grace_period() {
    let policy = Policy {
        grace: Duration::from_millis(300),
        ..Policy::default()
    };
    let s = start(policy, |_tls, _closing| std::future::pending::<()>()).await;
    let _held = connect(&s).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    s.stop.cancel();
    s.task.await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_panicking_connection_is_counted_and_the_server_carries_on() {
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let s = start(Policy::default(), move |tls, closing| {
        let panics = first.swap(false, Ordering::Relaxed);
        async move {
            assert!(!panics, "the first connection's handler panics");
            echo(tls, closing).await;
        }
    })
    .await;
    let mut doomed = connect(&s).await;
    let mut buf = [0u8; 1];
    assert_eq!(doomed.read(&mut buf).await.unwrap_or(0), 0);
    round_trip(&mut connect(&s).await).await;
    s.stop.cancel();
    s.task.await.unwrap();
    assert_eq!(s.counters.snapshot().panics, 1);
}

#[tokio::test]
async fn past_the_connection_cap_new_clients_wait_until_one_ends() {
    let policy = Policy {
        max_connections: 2,
        ..Policy::default()
    };
    let s = start(policy, echo).await;
    let mut first = connect(&s).await;
    round_trip(&mut first).await;
    let mut second = connect(&s).await;
    round_trip(&mut second).await;
    // The third TCP connection lands in the backlog: its TLS handshake waits for a free place.
    let third = tokio::spawn({
        let (addr, root) = (s.addr, s.root.clone());
        async move { tls_connect(addr, root).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served past the cap");
    assert_eq!(s.counters.snapshot().accepted, 2);
    drop(first);
    let mut third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a place is free")
        .unwrap();
    round_trip(&mut third).await;
    s.stop.cancel();
    s.task.await.unwrap();
}
