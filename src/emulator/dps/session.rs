//! DPS's MQTT 3.1.1 device endpoint (reference §6): TLS accept with a client certificate
//! requested, CONNECT checks, `$dps/registrations/res/#` subscriptions and the two request
//! topics. Like IoT Hub, DPS closes the connection on anything else: QoS 2, a foreign topic or
//! filter, a malformed packet. Every such close is counted, never a panic.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use percent_encoding::percent_decode_str;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::registration::{self, Reply};
use super::state::DpsState;
use crate::emulator::mqtt_wire::{
    MAX_CONNECT, idle_limit, is_peer_gone, read_packet, suback, write_packet,
};

/// DPS's 96 KB message limit plus room for the topic.
const MAX_PACKET: usize = 96 * 1024 + 1024;
const CONNECT_WAIT: Duration = Duration::from_secs(10);
pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
const REGISTER_TOPIC: &str = "$dps/registrations/PUT/iotdps-register/";
const POLL_TOPIC: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";

/// One device connection, its TLS handshake done (by the emulators' shared accept loop): MQTT
/// directly or inside a WebSocket. `stop` is cancelled when the endpoint shuts down.
pub(super) async fn connection(
    tls: TlsStream<TcpStream>,
    state: Arc<DpsState>,
    websocket: bool,
    stop: CancellationToken,
) {
    crate::inject::panic_at("emulator.dps");
    let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
    if websocket {
        let session = move |stream| session(stream, peer, state, stop);
        crate::emulator::websocket::bridge(tls, session).await;
    } else {
        session(tls, peer, state, stop).await;
    }
}

/// Why a CONNECT is refused (the device sees CONNACK 5 either way).
fn admit(
    state: &DpsState,
    connect: &Connect,
    peer: Option<&[CertificateDer<'static>]>,
) -> Result<(), &'static str> {
    let id = connect.client_id.as_str();
    if !super::enrollment::valid_id(id) {
        return Err("not a valid registration id");
    }
    let login = connect.login.as_ref().ok_or("no username")?;
    let (scope, registration_id) = parse_username(&login.username).ok_or("malformed username")?;
    if !scope.eq_ignore_ascii_case(&state.id_scope) {
        return Err("unknown id scope");
    }
    if registration_id != id {
        return Err("username names another registration");
    }
    let leaf = peer
        .and_then(|c| c.first())
        .ok_or("no client certificate (only X.509 attestation is emulated)")?;
    let info = crate::crypto::CertInfo::parse(leaf).map_err(|_| "unreadable certificate")?;
    if info.subject_cn.as_deref() != Some(id) {
        return Err("certificate CN differs from the registration id");
    }
    Ok(())
}

/// `{idScope}/registrations/{registrationId}/api-version=…[&ClientVersion=…]` (no `?`): the id
/// scope and the registration id.
fn parse_username(username: &str) -> Option<(&str, &str)> {
    let (scope, rest) = username.split_once("/registrations/")?;
    let (registration_id, query) = rest.split_once('/')?;
    let has_version = query.split('&').any(|p| {
        p.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    });
    (!scope.is_empty() && !registration_id.is_empty() && has_version)
        .then_some((scope, registration_id))
}

/// A request a device may publish.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Register {
        rid: String,
    },
    Poll {
        rid: String,
        operation_id: Option<String>,
    },
}

/// The request on `topic`, or `None` for a topic DPS does not serve.
fn parse_request(topic: &str) -> Option<Request> {
    let (path, query) = topic.split_once('?')?;
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    };
    let rid = param("$rid").filter(|r| !r.is_empty())?;
    match path {
        REGISTER_TOPIC => Some(Request::Register { rid }),
        POLL_TOPIC => Some(Request::Poll {
            rid,
            operation_id: param("operationId")
                .map(|v| percent_decode_str(&v).decode_utf8_lossy().into_owned()),
        }),
        _ => None,
    }
}

fn response(rid: &str, reply: Reply) -> Packet {
    let mut topic = format!("$dps/registrations/res/{}/?$rid={rid}", reply.status);
    if let Some(secs) = reply.retry_after {
        topic.push_str(&format!("&retry-after={secs}"));
    }
    Packet::Publish(Publish::new(topic, QoS::AtMostOnce, reply.body))
}

/// A device admitted at CONNECT.
struct Device {
    registration_id: String,
    /// The chain presented in the TLS handshake, leaf first.
    chain: Vec<CertificateDer<'static>>,
    keep_alive: Option<Duration>,
    subscribed: bool,
}

/// Reads CONNECT and answers CONNACK: the device, or `None` when the connection is over.
async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    peer: Option<Vec<CertificateDer<'static>>>,
    state: &DpsState,
) -> Option<Device> {
    let counters = &state.counters;
    let read = tokio::time::timeout(CONNECT_WAIT, read_packet(stream, buf, MAX_CONNECT));
    let connect = match read.await {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Err(e)) if is_peer_gone(&e) => return None,
        Err(_) => return None,
        Ok(_) => {
            counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    if let Err(reason) = admit(state, &connect, peer.as_deref()) {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(registration = %connect.client_id, reason, "DPS CONNECT refused");
        let refusal = ConnAck::new(ConnectReturnCode::NotAuthorized, false);
        let _ = write_packet(stream, Packet::ConnAck(refusal)).await;
        return None;
    }
    counters.connects.fetch_add(1, Ordering::Relaxed);
    // DPS keeps no session state: CleanSession 0 is accepted and treated as 1.
    let accepted = ConnAck::new(ConnectReturnCode::Success, false);
    write_packet(stream, Packet::ConnAck(accepted)).await.ok()?;
    Some(Device {
        registration_id: connect.client_id,
        chain: peer.unwrap_or_default(),
        keep_alive: Some(idle_limit(connect.keep_alive)),
        subscribed: false,
    })
}

/// One device's session on `stream`, whatever carries it.
pub(super) async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: Option<Vec<CertificateDer<'static>>>,
    state: Arc<DpsState>,
    stop: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(1024);
    if let Some(mut device) = accept(&mut stream, &mut buf, peer, &state).await {
        loop {
            let next = async {
                let read = read_packet(&mut stream, &mut buf, MAX_PACKET);
                match device.keep_alive {
                    Some(limit) => tokio::time::timeout(limit, read)
                        .await
                        .unwrap_or(Err(rumqttc::mqttbytes::Error::InsufficientBytes(0))),
                    None => read.await,
                }
            };
            let packet = tokio::select! {
                _ = stop.cancelled() => break,
                p = next => match p {
                    Ok(p) => p,
                    Err(e) if is_peer_gone(&e) => break,
                    Err(_) => {
                        state.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                },
            };
            let Some(replies) = answer(&state, &mut device, packet) else {
                break;
            };
            for reply in replies {
                if write_packet(&mut stream, reply).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// The packets answering `packet`, or `None` to close the connection (as DPS does on anything
/// but its own topics, QoS 0/1, pings and DISCONNECT).
fn answer(state: &Arc<DpsState>, device: &mut Device, packet: Packet) -> Option<Vec<Packet>> {
    let replies = match packet {
        Packet::Subscribe(s) if s.filters.iter().all(|f| f.path == RESPONSE_FILTER) => {
            device.subscribed = true;
            vec![suback(&s)]
        }
        Packet::Publish(p) if p.qos != QoS::ExactlyOnce => {
            let Some(request) = parse_request(&p.topic) else {
                state
                    .counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(registration = %device.registration_id, topic = %p.topic, "publish to a topic DPS does not serve");
                return None;
            };
            let mut out = Vec::with_capacity(2);
            if p.qos == QoS::AtLeastOnce {
                out.push(Packet::PubAck(PubAck::new(p.pkid)));
            }
            let (rid, reply) = handle(state, device, request, &p.payload);
            // DPS answers on the response topic only to devices subscribed to it.
            if device.subscribed {
                out.push(response(&rid, reply));
            }
            out
        }
        Packet::PingReq => vec![Packet::PingResp],
        Packet::PubAck(_) => Vec::new(),
        Packet::Disconnect => return None,
        _ => {
            state
                .counters
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    Some(replies)
}

fn handle(
    state: &Arc<DpsState>,
    device: &Device,
    request: Request,
    body: &[u8],
) -> (String, Reply) {
    let (id, chain) = (device.registration_id.as_str(), device.chain.as_slice());
    match request {
        Request::Register { rid } => (rid, registration::register(state, id, chain, body)),
        Request::Poll {
            rid,
            operation_id: Some(op),
        } => (rid, registration::poll(state, id, &op)),
        Request::Poll {
            rid,
            operation_id: None,
        } => {
            state.counters.malformed.fetch_add(1, Ordering::Relaxed);
            let e = super::error::DpsError::bad_request("operationId is required");
            (rid, e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_carry_scope_and_registration() {
        assert_eq!(
            parse_username("0ne00000A0A/registrations/dev-1/api-version=2019-03-31"),
            Some(("0ne00000A0A", "dev-1"))
        );
        assert_eq!(
            parse_username(
                "0ne00000A0A/registrations/dev-1/api-version=2019-03-31&ClientVersion=py%2F2.14"
            ),
            Some(("0ne00000A0A", "dev-1"))
        );
        assert_eq!(parse_username("0ne00000A0A/registrations/dev-1/"), None);
        assert_eq!(parse_username("0ne00000A0A/dev-1/?api-version=1"), None);
        assert_eq!(parse_username("/registrations/dev-1/api-version=1"), None);
    }

    #[test]
    fn request_topics() {
        assert_eq!(
            parse_request("$dps/registrations/PUT/iotdps-register/?$rid=7"),
            Some(Request::Register { rid: "7".into() })
        );
        assert_eq!(
            parse_request(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=4.ab.c%2Dd"
            ),
            Some(Request::Poll {
                rid: "8".into(),
                operation_id: Some("4.ab.c-d".into())
            })
        );
        assert_eq!(
            parse_request("$dps/registrations/PUT/iotdps-register/"),
            None
        );
        assert_eq!(parse_request("devices/d/messages/events/?$rid=1"), None);
    }
}
