//! The hub's MQTT 3.1.1 endpoint: TLS accept, CONNECT authorisation, telemetry with PUBACK,
//! keep-alive at 1.5× the client's value, one live connection per device.
//!
//! IoT Hub answers protocol violations by closing the connection (MQTT 3.1.1 has no server-side
//! DISCONNECT): QoS 2, a topic that is not the device's own, and packets over 256 KB all do that.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::auth::authorize;
use super::throttle::{Admission, Class};
use super::{DeviceCounters, HubState};
use crate::iothub::topics;

/// 256 KB of message plus room for the topic and property bag.
const MAX_PACKET: usize = 256 * 1024 + 4096;
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// IoT Hub caps its server-side keep-alive timeout at 1767 s.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(1767);
const MAX_SUBSCRIPTIONS: usize = 5;

pub(super) async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    state: Arc<HubState>,
    framing: Framing,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(config);
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            acceptor.clone(),
            state.clone(),
            framing,
            stop.child_token(),
        ));
    }
    stop.cancel();
}

/// How MQTT packets travel inside the TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Directly on TLS (port 8883).
    Tls,
    /// In binary WebSocket messages on `/$iothub/websocket` with subprotocol `mqtt` (port 443).
    WebSocket,
}

async fn connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    state: Arc<HubState>,
    framing: Framing,
    stop: CancellationToken,
) {
    let Ok(Ok(tls)) = tokio::time::timeout(CONNECT_WAIT, acceptor.accept(tcp)).await else {
        return;
    };
    let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
    match framing {
        Framing::Tls => session(tls, peer, state, stop).await,
        Framing::WebSocket => super::websocket::upgrade(tls, peer, state, stop).await,
    }
}

/// One device's MQTT session on `tls`, whatever carries it.
pub(super) async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut tls: S,
    peer: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    state: Arc<HubState>,
    stop: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let connect = match tokio::time::timeout(CONNECT_WAIT, read_packet(&mut tls, &mut buf)).await {
        Ok(Ok(Packet::Connect(c))) => c,
        _ => return,
    };
    let admitted = match authorize(&state, &connect, peer.as_deref()) {
        Ok(a) => a,
        Err(refused) => {
            state
                .counters(&connect.client_id)
                .refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(device = %connect.client_id, reason = refused.reason, "CONNECT refused");
            let _ =
                write_packet(&mut tls, Packet::ConnAck(ConnAck::new(refused.code, false))).await;
            let _ = tls.shutdown().await;
            return;
        }
    };
    let device = admitted.device_id;
    let counters = state.counters(&device);

    // Throttles apply to authorised connections: CONNACK is delayed while the hub shapes traffic,
    // and past that (or with the daily quota spent) the connection is closed without one.
    let admission = match state.throttles.quota_spent() {
        true => Admission::Refuse(Duration::ZERO),
        false => state.throttles.admit(Class::Connect),
    };
    match admission {
        Admission::After(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
        Admission::After(_) => {}
        Admission::Refuse(_) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
            return;
        }
    }

    // One live connection per device: a new one drops the old (IoT Hub's 400027).
    let conn_id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let dropped = stop.child_token();
    if let Some((_, previous)) = state
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(device.clone(), (conn_id, dropped.clone()))
    {
        previous.cancel();
    }
    counters.connects.fetch_add(1, Ordering::Relaxed);
    if let Some(serial) = admitted.cert_serial {
        counters
            .cert_serials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(serial);
    }

    let keep_alive = match connect.keep_alive {
        0 => None,
        s => Some((Duration::from_secs(u64::from(s)) * 3 / 2).min(MAX_KEEP_ALIVE)),
    };
    let ok = write_packet(
        &mut tls,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
    )
    .await;
    let mut subscriptions = 0usize;
    let mut twin_subscribed = false;
    let mut clean_exit = false;
    while ok.is_ok() {
        let next = async {
            match keep_alive {
                Some(limit) => tokio::time::timeout(limit, read_packet(&mut tls, &mut buf))
                    .await
                    .unwrap_or(Err(CodecError::InsufficientBytes(0))),
                None => read_packet(&mut tls, &mut buf).await,
            }
        };
        let packet = tokio::select! {
            _ = dropped.cancelled() => break,
            p = next => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let reply = match packet {
            Packet::Publish(p) => {
                if p.qos == QoS::ExactlyOnce {
                    break;
                }
                if let Some(properties) = topics::parse_telemetry(&p.topic, &device) {
                    // IoT Hub meters the body and the properties (reference §5).
                    let size = topics::message_size(p.payload.len(), &properties);
                    if !state.throttles.charge_message(size as usize) {
                        break; // daily quota spent: the hub severs the connection
                    }
                    match state.throttles.admit(Class::DeviceToCloud) {
                        Admission::After(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                        Admission::After(_) => {}
                        Admission::Refuse(_) => break,
                    }
                    received(
                        &counters,
                        properties,
                        p.payload.len(),
                        size,
                        state.throttles.meter_bytes(),
                    );
                    (p.qos == QoS::AtLeastOnce).then(|| Packet::PubAck(PubAck::new(p.pkid)))
                } else if p.topic.starts_with("$iothub/twin/") {
                    let answer = {
                        let mut twins = state.twins.lock().unwrap_or_else(|p| p.into_inner());
                        super::twin::handle(&mut twins, &device, &p.topic, &p.payload)
                    };
                    let Some((topic, body)) = answer else { break };
                    if p.qos == QoS::AtLeastOnce
                        && write_packet(&mut tls, Packet::PubAck(PubAck::new(p.pkid)))
                            .await
                            .is_err()
                    {
                        break;
                    }
                    // IoT Hub only answers devices that subscribed to the response topic.
                    twin_subscribed
                        .then(|| Packet::Publish(Publish::new(topic, QoS::AtMostOnce, body)))
                } else if p.topic.starts_with("$iothub/methods/res/") {
                    (p.qos == QoS::AtLeastOnce).then(|| Packet::PubAck(PubAck::new(p.pkid)))
                } else {
                    tracing::debug!(%device, topic = %p.topic, "publish to a topic the device may not use");
                    break;
                }
            }
            Packet::Subscribe(s) => {
                subscriptions += s.filters.len();
                let allowed = s
                    .filters
                    .iter()
                    .all(|f| subscription_allowed(&f.path, &device));
                if !allowed || subscriptions > MAX_SUBSCRIPTIONS {
                    break;
                }
                twin_subscribed |= s.filters.iter().any(|f| f.path == "$iothub/twin/res/#");
                let codes = s
                    .filters
                    .iter()
                    .map(|f| {
                        SubscribeReasonCode::Success(if f.qos == QoS::AtMostOnce {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        })
                    })
                    .collect();
                Some(Packet::SubAck(SubAck::new(s.pkid, codes)))
            }
            Packet::PingReq => Some(Packet::PingResp),
            Packet::PubAck(_) => None,
            Packet::Disconnect => {
                clean_exit = true;
                break;
            }
            _ => break,
        };
        if let Some(reply) = reply
            && write_packet(&mut tls, reply).await.is_err()
        {
            break;
        }
    }
    if !clean_exit {
        counters.drops.fetch_add(1, Ordering::Relaxed);
    }
    {
        let mut live = state.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(&device).is_some_and(|(id, _)| *id == conn_id) {
            live.remove(&device);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
}

/// Counts a telemetry message and keeps it as the device's last.
fn received(
    counters: &DeviceCounters,
    properties: Vec<(String, String)>,
    bytes: usize,
    size: u64,
    meter_bytes: u64,
) {
    counters.messages.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    counters
        .meters
        .fetch_add(topics::meters(size, meter_bytes), Ordering::Relaxed);
    let received_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    *crate::sync::lock(&counters.last_message) = Some(super::ReceivedMessage {
        properties,
        bytes: bytes as u64,
        size,
        received_at_ms,
    });
}

/// The topic filters IoT Hub lets a device subscribe to.
fn subscription_allowed(filter: &str, device: &str) -> bool {
    filter == format!("devices/{device}/messages/devicebound/#")
        || filter == "$iothub/twin/res/#"
        || filter == "$iothub/methods/POST/#"
        || filter == "$iothub/twin/PATCH/properties/desired/#"
}

async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Packet, CodecError> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Err(CodecError::InsufficientBytes(_)) => {}
            other => return other,
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(CodecError::InsufficientBytes(1));
        }
    }
}

async fn write_packet<S: AsyncWrite + Unpin>(
    stream: &mut S,
    packet: Packet,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(16);
    match packet {
        Packet::PingResp => PingResp.write(&mut out),
        other => other.write(&mut out, MAX_PACKET),
    }
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&out).await?;
    stream.flush().await
}
