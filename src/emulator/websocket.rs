//! MQTT over WebSocket, as IoT Hub and DPS serve it (reference §1.1, §6): TLS, then an HTTP
//! upgrade on `/$iothub/websocket` with subprotocol `mqtt`, then MQTT packets in binary messages.
//! The WebSocket is bridged to an in-memory byte stream so each endpoint's one session code serves
//! both transports.

use std::future::Future;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

pub const PATH: &str = "/$iothub/websocket";

fn reject(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

/// Checks the upgrade request and answers with the `mqtt` subprotocol.
// The signature is tungstenite's handshake callback: its error type is not ours to shrink.
#[allow(clippy::result_large_err)]
fn check_upgrade(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != PATH {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "the MQTT WebSocket endpoint is /$iothub/websocket",
        ));
    }
    let offers_mqtt = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
    if !offers_mqtt {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "subprotocol mqtt is required",
        ));
    }
    response
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
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
    let handshake = async_tungstenite::tokio::accept_hdr_async(tls, check_upgrade);
    let Ok(Ok(ws)) = tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await
    else {
        return;
    };
    let (session_side, bridge) = tokio::io::duplex(64 * 1024);
    // Both halves run in this connection's task, so aborting the connection ends both: the
    // session ends when the bridge closes, the bridge when the session drops its side.
    tokio::join!(session(session_side), relay(ws, bridge));
}

/// Carries MQTT bytes between binary WebSocket messages and the session's in-memory stream.
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
