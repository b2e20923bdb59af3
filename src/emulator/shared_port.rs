//! One HTTPS port for REST and WebSocket, as IoT Hub serves its port 443: REST requests go to
//! the service's router (registry, twins, methods, statistics, query), and a WebSocket upgrade on
//! `/$iothub/websocket` goes by its subprotocol to a session (`mqtt` to the MQTT session,
//! `AMQPWSB10` to the AMQP endpoint). Microsoft's SDKs fix the port, so a user who runs the
//! device SDK over WebSocket and the service SDK against one emulated hub needs both on it.
//!
//! Each connection is told apart by its first request. HTTP/2 (chosen by ALPN) is always REST:
//! the SDKs upgrade over HTTP/1.1. On HTTP/1.1 the request head is read (bounded by the server's
//! header size and header-read timeout) and replayed to whichever side takes it. A request for
//! `/$iothub/websocket` that is not an upgrade reaches the router, which answers 400 naming what
//! is missing, rather than the connection just closing.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::future::BoxFuture;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::error::EmulatorError;
use super::http::{HttpOptions, serve_accepted};
use super::listener::{Listener, ListenerCounters};
use super::tls::{ServerPki, client_cert_config};
use super::websocket::{self, PATH};

/// Who is on the other end of an upgraded connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client certificate chain sent in the TLS handshake (X.509 devices).
    pub certificates: Option<Vec<CertificateDer<'static>>>,
    pub addr: SocketAddr,
}

/// Runs one protocol session on the byte stream inside a WebSocket, until `closing`.
pub type Session =
    Arc<dyn Fn(DuplexStream, Peer, CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>;

/// The sessions a shared port upgrades to, by subprotocol.
#[derive(Clone, Default)]
pub struct Upgrades {
    pub mqtt: Option<Session>,
    pub amqp: Option<Session>,
}

impl Upgrades {
    /// The subprotocols offered, in our order of preference.
    fn offered(&self) -> &'static [&'static str] {
        const BOTH: [&str; 2] = [websocket::MQTT, websocket::AMQP];
        match (self.mqtt.is_some(), self.amqp.is_some()) {
            (true, true) => &BOTH,
            (true, false) => &BOTH[..1],
            (false, true) => &BOTH[1..],
            (false, false) => &[],
        }
    }

    fn session(&self, protocol: &str) -> Option<Session> {
        match protocol {
            websocket::MQTT => self.mqtt.clone(),
            websocket::AMQP => self.amqp.clone(),
            _ => None,
        }
    }
}

/// What every connection of one shared port is served with.
struct Port {
    router: axum::Router,
    options: Arc<HttpOptions>,
    counters: Arc<ListenerCounters>,
    upgrades: Upgrades,
    offered: &'static [&'static str],
}

/// Serves `router` and `upgrades` on `listener` (TLS with a certificate from `pki` for the
/// listener's address and `names`; a client certificate requested, not required) until
/// `shutdown`.
pub fn spawn(
    listener: TcpListener,
    pki: &ServerPki,
    names: &[&str],
    counters: Arc<ListenerCounters>,
    service: (axum::Router, HttpOptions),
    upgrades: Upgrades,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
    let (router, options) = service;
    let identity = pki.issue_for(&listener, names)?;
    let mut config = (*client_cert_config(identity)?).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = Listener::new(listener, Arc::new(config))
        .with_policy(options.policy())
        .counting(counters.clone());
    let offered = upgrades.offered();
    let port = Arc::new(Port {
        router: router.route(PATH, axum::routing::any(not_an_upgrade)),
        options: Arc::new(let_upgrades_through(options)),
        counters,
        upgrades,
        offered,
    });
    Ok(tokio::spawn(
        listener.serve(shutdown, move |tls, closing| {
            connection(tls, port.clone(), closing)
        }),
    ))
}

/// `/$iothub/websocket` without an upgrade: what is missing, as a 400.
async fn not_an_upgrade() -> axum::response::Response {
    (
        StatusCode::BAD_REQUEST,
        "/$iothub/websocket takes a WebSocket upgrade (Upgrade: websocket, Sec-WebSocket-Protocol: mqtt or AMQPWSB10)",
    )
        .into_response()
}

/// The service's gate, except for `/$iothub/websocket`: devices authenticate inside the
/// WebSocket (MQTT CONNECT, AMQP SASL/CBS), never with an HTTP header.
fn let_upgrades_through(mut options: HttpOptions) -> HttpOptions {
    if let Some(gate) = options.gate.take() {
        options.gate = Some(Arc::new(move |parts| match parts.uri.path() == PATH {
            true => Ok(()),
            false => gate(parts),
        }));
    }
    options
}

/// One connection, its TLS handshake done: REST, or a WebSocket session.
async fn connection(tls: TlsStream<TcpStream>, port: Arc<Port>, closing: CancellationToken) {
    let (tcp, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let peer = Peer {
        certificates: session.peer_certificates().map(|c| c.to_vec()),
        addr: tcp
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
    };
    let (router, options, counters) = (
        port.router.clone(),
        port.options.clone(),
        port.counters.clone(),
    );
    if h2 {
        return serve_accepted(tls, true, router, options, counters, closing).await;
    }
    let limits = options.limits;
    let mut tls = tls;
    let read = read_head(&mut tls, limits.max_header_bytes.max(8192));
    let Ok(Some(head)) = tokio::time::timeout(limits.header_read_timeout, read).await else {
        return;
    };
    let upgrade = is_websocket_upgrade(&head);
    let stream = Replay::new(head, tls);
    if !upgrade {
        return serve_accepted(stream, false, router, options, counters, closing).await;
    }
    let upgrades = port.upgrades.clone();
    websocket::bridge_any(stream, port.offered, move |stream, protocol| {
        let session = upgrades.session(protocol);
        async move {
            if let Some(session) = session {
                session(stream, peer, closing).await;
            }
        }
    })
    .await;
}

/// The bytes of the first request head (through its blank line), or none if the client closed
/// or sent more than `limit` bytes without ending it. Whatever came after the head in the same
/// reads is kept too, so nothing the client sent is lost.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S, limit: usize) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(head);
        }
        if head.len() > limit {
            return None;
        }
    }
}

/// Whether the head is a WebSocket upgrade request for `/$iothub/websocket` (its query aside).
fn is_websocket_upgrade(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let Some(request_line) = lines.next() else {
        return false;
    };
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    if method != Some("GET") || path != PATH {
        return false;
    }
    lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value.trim().eq_ignore_ascii_case("websocket")
        })
}

/// A stream whose first bytes are `head` (already read from `inner`), then `inner`'s.
struct Replay<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    fn new(head: Vec<u8>, inner: S) -> Self {
        Self { head, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_upgrade_on_the_websocket_path_is_an_upgrade() {
        let upgrade = b"GET /$iothub/websocket?iothub-no-client-cert=true HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nupgrade:  WebSocket \r\n\r\n";
        assert!(is_websocket_upgrade(upgrade));
        let plain = b"GET /$iothub/websocket HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(!is_websocket_upgrade(plain));
        let elsewhere = b"GET /devices/d1 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert!(!is_websocket_upgrade(elsewhere));
        let post = b"POST /$iothub/websocket HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert!(!is_websocket_upgrade(post));
        // A header after the blank line is the body's, not the head's.
        let in_body = b"GET /$iothub/websocket HTTP/1.1\r\n\r\nUpgrade: websocket\r\n";
        assert!(!is_websocket_upgrade(in_body));
    }

    #[tokio::test]
    async fn the_head_is_replayed_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n\r\nbody")
            .await
            .unwrap();
        drop(client);
        let mut server = server;
        let head = read_head(&mut server, 1024).await.unwrap();
        let mut replay = Replay::new(head, server);
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\nbody");
    }

    #[tokio::test]
    async fn a_head_past_the_limit_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        tokio::io::AsyncWriteExt::write_all(&mut client, long.as_bytes())
            .await
            .unwrap();
        assert!(read_head(&mut server, 4096).await.is_none());
    }
}
