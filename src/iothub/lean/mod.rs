//! fleetsim's own device-side MQTT 3.1.1 session to IoT Hub (`fleet.transport_impl: lean`), on
//! rumqttc's packet codec (`mqttbytes::v4`) but without rumqttc's client: no driver task, no
//! channels, no preallocated `Framed` buffers. The session is polled by the device's own task:
//! a publish writes and reads until its PUBACK; `incoming`, which the device races against its
//! timers while idle, reads the hub's messages and sends PINGREQ when the keep-alive is due.
//!
//! Memory follows the traffic: an idle session holds no read or write buffer (small reads go
//! through the stack, see `conn`), larger ones grow to the packet the codec announces and are
//! released once it is handled.
//!
//! What IoT Hub expects of a client and the session does: one QoS 1 publish in flight (the
//! `DeviceTransport` contract awaits each PUBACK, so the window is 1) with its PUBACK matched by
//! packet id; a PUBACK for QoS 1 messages the hub sends (cloud-to-device); a control packet at
//! least every keep-alive (PINGREQ when nothing else went out), and the connection given up when
//! a PINGRESP does not come back within the next one. What a hub never sends a device (QoS 2,
//! SUBSCRIBE, CONNECT, a second CONNACK, an ack for an id the session did not use), a malformed
//! or oversize packet, or a stream that ends mid-packet ends the session with a protocol error,
//! counted on the transport ([`ProtocolErrors`]).

mod conn;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use tokio::time::Instant;

use self::conn::{Conn, Target};
use super::HubError;
use super::delivery::{Incoming, Message, hold};

/// The largest packet a session reads: IoT Hub's 256 KB message with its topic and properties.
const MAX_INCOMING: usize = 256 * 1024 + 4096;
/// The largest packet a session writes (the device checks its messages' size before).
const MAX_OUTGOING: usize = 256 * 1024 + 4096;
/// A CONNACK is 4 bytes; anything announcing more before it is not a hub.
const MAX_CONNACK: usize = 64;
/// Buffers above this are released once empty, so a large message does not pin its buffer.
const KEEP_CAPACITY: usize = 1024;
/// Ids of requests a session gave up waiting for, whose acks may still arrive.
const GIVEN_UP_MAX: usize = 8;

/// The count of sessions a transport's lean sessions ended for a protocol violation of the hub.
pub type ProtocolErrors = Arc<AtomicU64>;

/// Who connects where, and the session's timing.
pub struct LeanDial<'a> {
    pub host: &'a str,
    pub port: u16,
    pub websocket: bool,
    pub client_id: &'a str,
    pub username: String,
    /// Empty for a device with a certificate; a SAS token for one without.
    pub password: String,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub ack_timeout: Duration,
}

/// Why a session ended.
enum Fault {
    /// The hub or the network went away.
    Gone(String),
    /// The hub sent what it must not.
    Protocol(String),
}

/// What the session heard that its caller may wait for.
enum Heard {
    PubAck(u16),
    /// A SUBACK's id and whether every filter was granted.
    SubAck(u16, bool),
    Message(Message),
}

/// A live connection of one device.
pub struct LeanSession {
    conn: Conn,
    /// Bytes read that are not yet a whole packet.
    buf: BytesMut,
    /// Packets queued and not yet written.
    out: BytesMut,
    /// Messages that arrived while the session waited for an acknowledgement, oldest first.
    held: VecDeque<Message>,
    keep_alive: Duration,
    ack_timeout: Duration,
    last_sent: Instant,
    ping_sent: bool,
    next_id: u16,
    awaiting_puback: Option<u16>,
    awaiting_suback: Option<u16>,
    given_up: Vec<u16>,
    /// Why the session ended, once it has.
    ended: Option<String>,
    errors: ProtocolErrors,
}

/// Connects as `dial.client_id` over `tls` and waits for CONNACK 0.
pub async fn connect(
    dial: LeanDial<'_>,
    tls: Arc<rustls::ClientConfig>,
    errors: ProtocolErrors,
) -> Result<LeanSession, HubError> {
    let handshake = async {
        let target = Target {
            host: dial.host,
            port: dial.port,
            websocket: dial.websocket,
        };
        let mut conn = Conn::dial(target, tls).await?;
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(dial.client_id);
        connect.keep_alive = u16::try_from(dial.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = false;
        connect.set_login(dial.username, dial.password);
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .write(&mut out, MAX_OUTGOING)
            .map_err(|e| HubError::Setup(e.to_string()))?;
        if let Err(e) = conn.write_out(&mut out).await {
            return Err(HubError::Transport(e.to_string()));
        }
        let mut buf = BytesMut::new();
        match next_packet(&mut conn, &mut buf, MAX_CONNACK).await {
            Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => Ok((conn, buf)),
            Ok(Packet::ConnAck(ack)) => Err(HubError::ConnectRefused(
                super::tls::connack_code(ack.code).to_string(),
            )),
            // IoT Hub throttles by closing without a CONNACK.
            Err(Fault::Gone(_)) => Err(HubError::ClosedBeforeConnack),
            Ok(other) => Err(protocol(
                &errors,
                format!("{} before CONNACK", name(&other)),
            )),
            Err(Fault::Protocol(why)) => Err(protocol(&errors, why)),
        }
    };
    let (conn, buf) = match tokio::time::timeout(dial.connect_timeout, handshake).await {
        Ok(result) => result?,
        Err(_) => return Err(HubError::Timeout),
    };
    Ok(LeanSession {
        conn,
        buf,
        out: BytesMut::new(),
        held: VecDeque::new(),
        keep_alive: dial.keep_alive,
        ack_timeout: dial.ack_timeout,
        last_sent: Instant::now(),
        ping_sent: false,
        next_id: 0,
        awaiting_puback: None,
        awaiting_suback: None,
        given_up: Vec::new(),
        ended: None,
        errors,
    })
}

/// Counts a protocol violation and makes it the error the caller sees.
fn protocol(errors: &ProtocolErrors, why: String) -> HubError {
    errors.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%why, "the hub broke the MQTT protocol; the session ends");
    HubError::Protocol(why)
}

impl LeanSession {
    /// Publishes and, for QoS 1, waits for the PUBACK with the publish's packet id.
    pub async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        at_least_once: bool,
    ) -> Result<(), HubError> {
        self.check_open()?;
        let qos = match at_least_once {
            true => QoS::AtLeastOnce,
            false => QoS::AtMostOnce,
        };
        let mut publish = Publish::new(topic, qos, payload);
        if !at_least_once {
            self.queue(&Packet::Publish(publish))?;
            return self.flush().await;
        }
        let id = self.take_id();
        publish.pkid = id;
        self.queue(&Packet::Publish(publish))?;
        self.awaiting_puback = Some(id);
        let wait = self.ack_timeout;
        let acked = async {
            loop {
                match self.hear().await? {
                    Heard::PubAck(got) if got == id => return Ok(()),
                    Heard::Message(m) => hold(&mut self.held, m),
                    Heard::PubAck(_) | Heard::SubAck(..) => {}
                }
            }
        };
        let result = tokio::time::timeout(wait, acked).await;
        self.awaiting_puback = None;
        result.unwrap_or_else(|_| {
            self.give_up(id);
            Err(HubError::Timeout)
        })
    }

    /// Subscribes to `filters` (each with QoS 1 when `true`, else 0) and waits for the SUBACK.
    /// A refused filter is an error (IoT Hub closes the connection instead, which is one too).
    pub async fn subscribe(&mut self, filters: Vec<(String, bool)>) -> Result<(), HubError> {
        self.check_open()?;
        let filters = filters.into_iter().map(|(path, at_least_once)| {
            let qos = match at_least_once {
                true => QoS::AtLeastOnce,
                false => QoS::AtMostOnce,
            };
            SubscribeFilter::new(path, qos)
        });
        let mut subscribe = Subscribe::new_many(filters);
        let id = self.take_id();
        subscribe.pkid = id;
        self.queue(&Packet::Subscribe(subscribe))?;
        self.awaiting_suback = Some(id);
        let wait = self.ack_timeout;
        let granted = async {
            loop {
                match self.hear().await? {
                    Heard::SubAck(got, true) if got == id => return Ok(()),
                    Heard::SubAck(got, false) if got == id => {
                        return Err(HubError::Closed("the hub refused a subscription".into()));
                    }
                    Heard::Message(m) => hold(&mut self.held, m),
                    Heard::PubAck(_) | Heard::SubAck(..) => {}
                }
            }
        };
        let result = tokio::time::timeout(wait, granted).await;
        self.awaiting_suback = None;
        result.unwrap_or_else(|_| {
            self.give_up(id);
            Err(HubError::Timeout)
        })
    }

    /// The next message from the hub, or the loss of the connection. Cancel-safe: the device
    /// races it against its timers.
    pub async fn incoming(&mut self) -> Incoming {
        if let Some(m) = self.held.pop_front() {
            return Incoming::Message(m);
        }
        let m = loop {
            match self.hear().await {
                Ok(Heard::Message(m)) => break m,
                Ok(Heard::PubAck(_) | Heard::SubAck(..)) => {}
                Err(e) => return Incoming::Closed(e.to_string()),
            }
        };
        if !self.out.is_empty() {
            // A QoS 1 message's PUBACK goes out now, not with the device's next packet. The
            // message waits in `held` meanwhile, so a cancelled flush does not lose it; a failed
            // one ends the session, which the next call reports.
            self.held.push_back(m);
            let _ = self.flush().await;
            return match self.held.pop_front() {
                Some(m) => Incoming::Message(m),
                None => Incoming::Closed("no message held".into()),
            };
        }
        Incoming::Message(m)
    }

    /// Completes when the connection is lost, with the reason; messages from the hub are
    /// dropped meanwhile (for a session on its way out, e.g. the old one of a swap).
    pub async fn closed(&mut self) -> String {
        self.held.clear();
        loop {
            if let Incoming::Closed(reason) = self.incoming().await {
                return reason;
            }
        }
    }

    /// Sends DISCONNECT and closes the stream, briefly.
    pub async fn disconnect(mut self) {
        if self.ended.is_none() && self.queue(&Packet::Disconnect).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
        }
        self.conn.shutdown(Duration::from_secs(1)).await;
    }

    fn check_open(&self) -> Result<(), HubError> {
        match &self.ended {
            Some(why) => Err(HubError::Closed(why.clone())),
            None => Ok(()),
        }
    }

    /// The next packet id (1..=65535; MQTT forbids 0).
    fn take_id(&mut self) -> u16 {
        self.next_id = id_after(self.next_id);
        self.next_id
    }

    /// Stops waiting for `id`'s ack: if it still comes, it is late, not a violation.
    fn give_up(&mut self, id: u16) {
        if self.given_up.len() == GIVEN_UP_MAX {
            self.given_up.remove(0);
        }
        self.given_up.push(id);
    }

    fn queue(&mut self, packet: &Packet) -> Result<(), HubError> {
        packet
            .write(&mut self.out, MAX_OUTGOING)
            .map(|_| ())
            .map_err(|e| HubError::Setup(format!("cannot encode the packet: {e}")))
    }

    /// Writes what is queued; a failure ends the session.
    async fn flush(&mut self) -> Result<(), HubError> {
        if self.out.is_empty() {
            return Ok(());
        }
        match self.conn.write_out(&mut self.out).await {
            Ok(()) => {
                self.last_sent = Instant::now();
                release_if_large(&mut self.out);
                Ok(())
            }
            Err(e) => Err(self.end(Fault::Gone(e.to_string()))),
        }
    }

    /// Ends the session for `fault`, counting protocol violations; the error callers see.
    fn end(&mut self, fault: Fault) -> HubError {
        let error = match fault {
            Fault::Gone(why) => HubError::Closed(why),
            Fault::Protocol(why) => protocol(&self.errors, why),
        };
        self.ended = Some(error.to_string());
        self.buf = BytesMut::new();
        self.out = BytesMut::new();
        error
    }

    /// Reads until the hub says something a caller may wait for, sending what is queued first
    /// and a PINGREQ when the keep-alive is due.
    async fn hear(&mut self) -> Result<Heard, HubError> {
        self.check_open()?;
        loop {
            self.flush().await?;
            let ping_due = self.last_sent + self.keep_alive;
            let pinging = !self.keep_alive.is_zero();
            let read = tokio::select! {
                r = next_packet(&mut self.conn, &mut self.buf, MAX_INCOMING) => Some(r),
                _ = tokio::time::sleep_until(ping_due), if pinging => None,
            };
            let packet = match read {
                Some(Ok(packet)) => packet,
                Some(Err(fault)) => return Err(self.end(fault)),
                None if self.ping_sent => {
                    let why = "no PINGRESP within the keep-alive".to_string();
                    return Err(self.end(Fault::Gone(why)));
                }
                None => {
                    self.queue(&Packet::PingReq)?;
                    self.ping_sent = true;
                    continue;
                }
            };
            match self.classify(packet) {
                Ok(Some(heard)) => return Ok(heard),
                Ok(None) => {}
                Err(fault) => return Err(self.end(fault)),
            }
        }
    }

    /// What `packet` means for the session: something to pass on, nothing (PINGRESP), or a
    /// violation. A QoS 1 message queues its PUBACK.
    fn classify(&mut self, packet: Packet) -> Result<Option<Heard>, Fault> {
        match packet {
            Packet::Publish(p) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => self
                        .queue(&Packet::PubAck(PubAck::new(p.pkid)))
                        .map_err(|e| Fault::Protocol(e.to_string()))?,
                    QoS::ExactlyOnce => {
                        return Err(Fault::Protocol("a QoS 2 message (IoT Hub has none)".into()));
                    }
                }
                let message = Message {
                    topic: p.topic,
                    payload: p.payload,
                };
                Ok(Some(Heard::Message(message)))
            }
            Packet::PubAck(ack) => {
                let id = self.acked(ack.pkid, self.awaiting_puback, "PUBACK")?;
                Ok(Some(Heard::PubAck(id)))
            }
            Packet::SubAck(ack) => {
                let id = self.acked(ack.pkid, self.awaiting_suback, "SUBACK")?;
                let granted = ack.return_codes.iter().all(|c| {
                    matches!(
                        c,
                        SubscribeReasonCode::Success(QoS::AtMostOnce | QoS::AtLeastOnce)
                    )
                });
                Ok(Some(Heard::SubAck(id, granted)))
            }
            Packet::PingResp => {
                self.ping_sent = false;
                Ok(None)
            }
            other => Err(Fault::Protocol(format!(
                "a {} packet, which a hub never sends a device",
                name(&other)
            ))),
        }
    }

    /// Checks an ack's `id` against the one awaited and those given up on.
    fn acked(&mut self, id: u16, awaited: Option<u16>, what: &str) -> Result<u16, Fault> {
        if awaited == Some(id) {
            return Ok(id);
        }
        match self.given_up.iter().position(|g| *g == id) {
            Some(i) => {
                self.given_up.remove(i);
                Ok(id)
            }
            None => Err(Fault::Protocol(format!(
                "a {what} for packet id {id}, which the session did not send"
            ))),
        }
    }
}

/// Reads from `conn` until `buf` holds a whole packet of at most `max` bytes. Cancel-safe:
/// what was read stays in `buf`.
async fn next_packet(conn: &mut Conn, buf: &mut BytesMut, max: usize) -> Result<Packet, Fault> {
    loop {
        let need = match Packet::read(buf, max) {
            Ok(packet) => {
                release_if_large(buf);
                return Ok(packet);
            }
            Err(CodecError::InsufficientBytes(n)) => n,
            Err(CodecError::PayloadSizeLimitExceeded(n)) => {
                return Err(Fault::Protocol(format!(
                    "a packet of {n} bytes, over the {max} a session takes"
                )));
            }
            Err(e) => return Err(Fault::Protocol(format!("a malformed packet: {e}"))),
        };
        match conn.read_into(buf, need).await {
            Ok(0) if buf.is_empty() => {
                return Err(Fault::Gone("the hub closed the connection".into()));
            }
            Ok(0) => {
                return Err(Fault::Protocol(format!(
                    "a truncated packet: the stream ended {need} bytes short"
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(Fault::Gone(e.to_string())),
        }
    }
}

/// The packet id after `id`, wrapping past 65535 to 1.
fn id_after(id: u16) -> u16 {
    id.checked_add(1).unwrap_or(1)
}

/// Drops an empty buffer's allocation when it has grown past [`KEEP_CAPACITY`].
fn release_if_large(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = BytesMut::new();
    }
}

/// A packet's MQTT name, for errors.
fn name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_wrap_past_zero() {
        assert_eq!(id_after(0), 1);
        assert_eq!(id_after(1), 2);
        assert_eq!(id_after(u16::MAX), 1);
    }

    #[test]
    fn a_large_buffer_is_released_once_empty_and_a_small_one_kept() {
        let mut large = BytesMut::with_capacity(64 * 1024);
        release_if_large(&mut large);
        assert_eq!(large.capacity(), 0);
        let mut small = BytesMut::with_capacity(512);
        release_if_large(&mut small);
        assert_eq!(small.capacity(), 512);
        let mut busy = BytesMut::with_capacity(64 * 1024);
        busy.extend_from_slice(b"half a packet");
        release_if_large(&mut busy);
        assert!(
            busy.capacity() >= 64 * 1024 - 16,
            "a buffer holding bytes keeps them"
        );
    }
}
