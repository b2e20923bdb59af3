//! MQTT (and AMQP) over WebSocket, as IoT Hub and DPS serve it (reference §1.1, §6): TLS, then an
//! HTTP upgrade on `/$iothub/websocket` with subprotocol `mqtt` (or `AMQPWSB10`), then the
//! protocol's bytes in binary messages.
//! The WebSocket is bridged to an in-memory byte stream so each endpoint's one session code serves
//! both transports.

use std::future::Future;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

pub const PATH: &str = "/$iothub/websocket";
/// The subprotocol of MQTT over WebSocket.
pub const MQTT: &str = "mqtt";
/// The subprotocol of AMQP over WebSocket (IoT Hub's and Event Hubs' name for it).
pub const AMQP: &str = "AMQPWSB10";

/// The largest WebSocket message (and frame) read: one MQTT packet of the largest the endpoints
/// take (IoT Hub's 256 KB message and its topic), with room to spare. tungstenite's defaults
/// (64 MiB messages, 16 MiB frames) would let a client that has not even sent CONNECT make the
/// server buffer megabytes.
const MAX_MESSAGE: usize = 512 * 1024;

fn reject(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

/// The first of `offered`'s subprotocols the client asks for, in our order of preference.
fn chosen(request: &Request, offered: &[&'static str]) -> Option<&'static str> {
    let asked: Vec<String> = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    offered
        .iter()
        .copied()
        .find(|o| asked.iter().any(|a| *a == o.to_ascii_lowercase()))
}

/// Checks the upgrade request against `offered` and answers with the subprotocol it picked.
// The signature is tungstenite's handshake callback: its error type is not ours to shrink.
#[allow(clippy::result_large_err)]
fn check_upgrade(
    request: &Request,
    mut response: Response,
    offered: &[&'static str],
    picked: &std::sync::OnceLock<&'static str>,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != PATH {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "the WebSocket endpoint is /$iothub/websocket",
        ));
    }
    let Some(protocol) = chosen(request, offered) else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            &format!("subprotocol required: one of {}", offered.join(", ")),
        ));
    };
    let _ = picked.set(protocol);
    response
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    Ok(response)
}

/// Completes the WebSocket upgrade on `tls` and runs `session` on the MQTT byte stream inside
/// it, until either side closes.
pub async fn bridge<S, F, Fut>(tls: S, session: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    bridge_any(tls, &[MQTT], |stream, _| session(stream)).await;
}

/// Completes the WebSocket upgrade on `tls` with the first of `offered`'s subprotocols the client
/// asks for (refusing it with 400 when it asks for none of them), then runs `session` on the byte
/// stream inside it with the subprotocol picked, until either side closes.
pub async fn bridge_any<S, F, Fut>(tls: S, offered: &[&'static str], session: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(DuplexStream, &'static str) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let picked = std::sync::OnceLock::new();
    // tungstenite's handshake callback: its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response| check_upgrade(request, response, offered, &picked);
    let handshake =
        async_tungstenite::tokio::accept_hdr_async_with_config(tls, callback, Some(config));
    let Ok(Ok(ws)) = tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await
    else {
        return;
    };
    let Some(protocol) = picked.get().copied() else {
        return;
    };
    let (session_side, bridge) = tokio::io::duplex(64 * 1024);
    // Both halves run in this connection's task, so aborting the connection ends both: the
    // session ends when the bridge closes, the bridge when the session drops its side.
    tokio::join!(session(session_side, protocol), relay(ws, bridge));
}

/// Carries the protocol's bytes between binary WebSocket messages and the session's in-memory stream.
async fn relay<S>(mut ws: WebSocketStream<TokioAdapter<S>>, mut bridge: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Binary(bytes))) => {
                    if bridge.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // Text frames are not MQTT; a close or an error ends the session.
                _ => break,
            },
            n = bridge.read(&mut out) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws.send(Message::Binary(out[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    drop(bridge);
    let _ = ws.close(None).await;
}
