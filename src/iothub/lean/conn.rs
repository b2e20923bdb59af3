//! The byte stream under a lean session: MQTT directly on TLS, or inside a WebSocket on TLS
//! (`/$iothub/websocket`, subprotocol `mqtt`, one binary message per MQTT packet written). Dialing
//! (TCP, TLS with the device's certificate, the WebSocket upgrade) and the three things a session
//! does with it: read what arrived, write a packet, shut down.
//!
//! Reads and writes are cancel-safe: a session's `incoming` is raced against the device's timers,
//! so a read that is dropped loses nothing and a write that is dropped half-way leaves the rest
//! in the caller's buffer for the next one.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self, Message as WsMessage};
use bytes::BytesMut;
use futures_util::{Sink, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::iothub::HubError;

/// The largest WebSocket message a session takes: one MQTT packet of the largest it accepts.
const MAX_WS_MESSAGE: usize = 512 * 1024;

/// Reads smaller than this go through a small stack buffer, so an idle session holds no read
/// buffer of its own while it waits (IoT Hub's PUBACK, SUBACK and PINGRESP fit in it whole).
const SMALL_READ: usize = 128;

// The TLS stream stays inline: the session holding it is boxed once already, and a second box
// would be one more allocation per device for the common case.
#[allow(clippy::large_enum_variant)]
pub(super) enum Conn {
    Tls(TlsStream<TcpStream>),
    /// Boxed: a WebSocket's state is larger than the TLS stream it wraps, and most sessions
    /// are on TLS.
    Ws(Box<WebSocketStream<TokioAdapter<TlsStream<TcpStream>>>>),
}

/// Where to dial and how.
pub(super) struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub websocket: bool,
}

impl Conn {
    /// TCP, TLS presenting the device's certificate (`config`), and the WebSocket upgrade when
    /// asked. Errors are the hub errors the rumqttc transport gives for the same failures.
    pub(super) async fn dial(
        target: Target<'_>,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, HubError> {
        let tcp = TcpStream::connect((target.host, target.port))
            .await
            .map_err(|e| HubError::Transport(e.to_string()))?;
        // Small MQTT packets under TLS otherwise wait on Nagle + delayed ACK.
        tcp.set_nodelay(true)
            .map_err(|e| HubError::Transport(e.to_string()))?;
        let name = ServerName::try_from(target.host.to_string())
            .map_err(|e| HubError::Setup(format!("server name {}: {e}", target.host)))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| HubError::Tls(e.to_string()))?;
        if !target.websocket {
            return Ok(Conn::Tls(tls));
        }
        let url = format!(
            "wss://{}:{}/$iothub/websocket",
            crate::iothub::tls::url_host(target.host),
            target.port
        );
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(url)
            .map_err(|e| HubError::Setup(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static("mqtt"),
        );
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_WS_MESSAGE))
            .max_frame_size(Some(MAX_WS_MESSAGE));
        let (ws, _) =
            async_tungstenite::tokio::client_async_with_config(request, tls, Some(config))
                .await
                .map_err(|e| HubError::Transport(format!("WebSocket upgrade: {e}")))?;
        Ok(Conn::Ws(Box::new(ws)))
    }

    /// Reads what has arrived onto `buf`, at least `need` bytes' room when the codec knows
    /// how many it lacks. `Ok(0)` is the end of the stream.
    pub(super) async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        need: usize,
    ) -> std::io::Result<usize> {
        match self {
            Conn::Tls(tls) if buf.is_empty() && need <= SMALL_READ => {
                let mut small = [0u8; SMALL_READ];
                let n = tls.read(&mut small).await?;
                buf.extend_from_slice(&small[..n]);
                Ok(n)
            }
            Conn::Tls(tls) => {
                buf.reserve(need.max(SMALL_READ));
                tls.read_buf(buf).await
            }
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(0),
                    Some(Ok(WsMessage::Binary(data))) if !data.is_empty() => {
                        buf.extend_from_slice(&data);
                        return Ok(data.len());
                    }
                    // tungstenite answers pings itself.
                    Some(Ok(WsMessage::Binary(_) | WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                    Some(Ok(WsMessage::Text(_) | WsMessage::Frame(_))) => {
                        return Err(std::io::Error::other("a text frame inside MQTT"));
                    }
                    Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                }
            },
        }
    }

    /// Writes all of `out` (cancel-safe: what was written is taken off `out`).
    pub(super) async fn write_out(&mut self, out: &mut BytesMut) -> std::io::Result<()> {
        match self {
            Conn::Tls(tls) => {
                while !out.is_empty() {
                    if tls.write_buf(out).await? == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                }
                tls.flush().await
            }
            Conn::Ws(ws) => {
                if !out.is_empty() {
                    let ready =
                        futures_util::future::poll_fn(|cx| Pin::new(&mut **ws).poll_ready(cx));
                    ready.await.map_err(std::io::Error::other)?;
                    // No await between taking the bytes and handing them over.
                    let message = WsMessage::Binary(out.split().freeze());
                    Pin::new(&mut **ws)
                        .start_send(message)
                        .map_err(std::io::Error::other)?;
                }
                futures_util::future::poll_fn(|cx| Pin::new(&mut **ws).poll_flush(cx))
                    .await
                    .map_err(std::io::Error::other)
            }
        }
    }

    /// Closes the stream (TLS close_notify, or the WebSocket close handshake), within `wait`.
    pub(super) async fn shutdown(&mut self, wait: Duration) {
        let close = async {
            match self {
                Conn::Tls(tls) => {
                    let _ = tls.shutdown().await;
                }
                Conn::Ws(ws) => {
                    let _ = ws.close(None).await;
                }
            }
        };
        let _ = tokio::time::timeout(wait, close).await;
    }
}
