//! The hub's MQTT 3.1.1 endpoint (on the emulators' accept loop): CONNECT authorisation, telemetry with PUBACK,
//! keep-alive at 1.5× the client's value (a client without one is cut off after IoT Hub's
//! 1767 s cap, see [`idle_limit`]), one live connection per device. CONNECT is read within 10 s
//! and 16 KiB ([`MAX_CONNECT`]), before the client is known. A session is named
//! steps: [`connect`], [`Live::register`], [`Live::serve`] (the device's packets, and what the
//! cloud side pushes through the connection's [`Outbox`]: desired-property notifications and
//! direct-method requests), [`Live::end`]. Twin requests go to [`super::device_twin`], method
//! answers to [`super::methods`], cloud-to-device messages and their PUBACKs to
//! [`super::c2d_delivery`].
//!
//! IoT Hub answers protocol violations by closing the connection (MQTT 3.1.1 has no server-side
//! DISCONNECT): QoS 2, a topic that is not the device's own, and packets over 256 KB all do that.
//! A basic-tier hub (no twins, methods or cloud-to-device messages) treats those topics the same
//! way; the reference documents only that the tiers lack them, so closing is our inference.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::auth::{Admitted, authorize};
use super::c2d_delivery::C2dDelivery;
use super::device_twin::{self, Outcome};
use super::outbox::{Outbox, Subscription};
use super::state::{DeviceCounters, HubState, LiveEntry, bump, now_ms};
use super::throttle::{Admission, Class};
use crate::emulator::mqtt_wire::{MAX_CONNECT, idle_limit, read_packet, suback, write_packet};
use crate::iothub::topics;
use crate::sync::lock;

/// 256 KB of message plus room for the topic and property bag.
const MAX_PACKET: usize = 256 * 1024 + 4096;
const CONNECT_WAIT: Duration = Duration::from_secs(10);
const MAX_SUBSCRIPTIONS: usize = 5;

/// One device's MQTT session on `tls`, whatever carries it: CONNECT, then packets until the
/// device disconnects, breaks a rule, goes silent, or is dropped (a newer connection, disabling,
/// shutdown). `websocket` says whether the session came inside a WebSocket (counted per device).
pub(super) async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut tls: S,
    peer: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    state: Arc<HubState>,
    stop: CancellationToken,
    websocket: bool,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let Some((connect, admitted)) = connect(&mut tls, &mut buf, peer, &state).await else {
        return;
    };
    let token_expiry = admitted.token_expiry;
    let mut live = Live::register(&state, admitted, &stop, connect.clean_session);
    if websocket {
        live.counters
            .websocket_connects
            .fetch_add(1, Ordering::Relaxed);
    }
    let keep_alive = Some(idle_limit(connect.keep_alive));
    live.token_expiry = token_deadline(token_expiry);
    let connack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false));
    let mut clean_exit = false;
    if write_packet(&mut tls, connack).await.is_ok() {
        clean_exit = live.serve(&mut tls, &mut buf, keep_alive).await;
    }
    live.end(clean_exit);
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
}

/// Reads and authorises CONNECT, then passes the throttles and the daily quota. `None` when the
/// connection is to be closed (a refusal's CONNACK is already sent).
async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut S,
    buf: &mut BytesMut,
    peer: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    state: &HubState,
) -> Option<(Connect, Admitted)> {
    let connect = match tokio::time::timeout(CONNECT_WAIT, read_packet(tls, buf, MAX_CONNECT)).await
    {
        Ok(Ok(Packet::Connect(c))) => c,
        _ => return None,
    };
    if state.faults.refuse_connects.is_open() {
        // A scenario's refuse_connects fault: IoT Hub's answer when it cannot serve.
        state
            .counters(&connect.client_id)
            .refused
            .fetch_add(1, Ordering::Relaxed);
        let refused = ConnAck::new(ConnectReturnCode::ServiceUnavailable, false);
        let _ = write_packet(tls, Packet::ConnAck(refused)).await;
        let _ = tls.shutdown().await;
        return None;
    }
    let admitted = match authorize(state, &connect, peer.as_deref()) {
        Ok(a) => a,
        Err(refused) => {
            let counters = state.counters(&connect.client_id);
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(device = %connect.client_id, reason = refused.reason, "CONNECT refused");
            let _ = write_packet(tls, Packet::ConnAck(ConnAck::new(refused.code, false))).await;
            let _ = tls.shutdown().await;
            return None;
        }
    };
    // Throttles apply to authorised connections: CONNACK is delayed while the hub shapes traffic,
    // and past that (or with the daily quota spent) the connection is closed without one.
    let admission = match state.throttles.quota_spent() {
        true => Admission::Refuse(Duration::ZERO),
        false => state.throttles.admit(Class::Connect),
    };
    if !wait_for(admission).await {
        let counters = state.counters(&admitted.device_id);
        counters.refused.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
        return None;
    }
    Some((connect, admitted))
}

/// When a session that authenticated with a token expiring at `expiry` (Unix seconds) is to be
/// severed: IoT Hub drops a device's connection when its SAS token expires.
fn token_deadline(expiry: Option<u64>) -> Option<tokio::time::Instant> {
    let expiry_ms = i64::try_from(expiry?).ok()?.saturating_mul(1000);
    let left = u64::try_from(expiry_ms.saturating_sub(now_ms())).unwrap_or(0);
    Some(tokio::time::Instant::now() + Duration::from_millis(left))
}

/// Waits out a shaped admission; false if it was refused.
async fn wait_for(admission: Admission) -> bool {
    match admission {
        Admission::After(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            true
        }
        Admission::Refuse(_) => false,
    }
}

/// What a packet from the device leads to.
enum Step {
    /// Answer with these packets (none, a PUBACK, a PUBACK and a response...).
    Reply(Vec<Packet>),
    /// The device broke a rule, or the hub severs it: close without a word.
    Close,
    /// The device sent DISCONNECT.
    Disconnect,
}

/// An admitted device's live connection.
struct Live<'a> {
    state: &'a HubState,
    device: String,
    counters: Arc<DeviceCounters>,
    conn_id: u64,
    /// Cancelled when this connection is dropped: by a newer one, disabling or shutdown.
    dropped: CancellationToken,
    outbox: Arc<Outbox>,
    subscriptions: usize,
    twin_subscribed: bool,
    c2d: C2dDelivery,
    /// When the SAS token the device connected with expires: the hub severs the session then.
    token_expiry: Option<tokio::time::Instant>,
}

impl<'a> Live<'a> {
    /// Makes this the device's one live connection: a newer one drops the older (IoT Hub's 400027).
    fn register(
        state: &'a HubState,
        admitted: Admitted,
        stop: &CancellationToken,
        clean_session: bool,
    ) -> Self {
        let device = admitted.device_id;
        let c2d = C2dDelivery::connected(state, &device, clean_session);
        let counters = state.counters(&device);
        let conn_id = state.next_connection.fetch_add(1, Ordering::Relaxed);
        let dropped = stop.child_token();
        let outbox = Arc::new(Outbox::default());
        let entry = LiveEntry {
            conn_id,
            dropped: dropped.clone(),
            outbox: outbox.clone(),
        };
        let previous = lock(&state.live).insert(device.clone(), entry);
        if let Some(previous) = previous {
            previous.dropped.cancel();
        }
        counters.connects.fetch_add(1, Ordering::Relaxed);
        counters.state_changed_ms.store(now_ms(), Ordering::Relaxed);
        counters.touch();
        if let Some(serial) = admitted.cert_serial {
            lock(&counters.cert_serials).push(serial);
        }
        if c2d.subscribed() {
            // A remembered subscription: what is queued flows once the session serves.
            outbox.wake();
        }
        Self {
            state,
            device,
            counters,
            conn_id,
            dropped,
            outbox,
            subscriptions: 0,
            twin_subscribed: false,
            c2d,
            token_expiry: None,
        }
    }

    /// Answers packets until the connection ends; true if the device disconnected cleanly.
    /// Between packets it writes what the cloud side pushed. Keep-alive counts only the
    /// device's packets.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        tls: &mut S,
        buf: &mut BytesMut,
        keep_alive: Option<Duration>,
    ) -> bool {
        let far = Duration::from_secs(86_400 * 365);
        let mut deadline = tokio::time::Instant::now() + keep_alive.unwrap_or(far);
        let token_expiry = self
            .token_expiry
            .unwrap_or_else(|| tokio::time::Instant::now() + far);
        loop {
            let packet = tokio::select! {
                _ = self.dropped.cancelled() => return false,
                _ = tokio::time::sleep_until(token_expiry) => {
                    tracing::debug!(device = %self.device, "SAS token expired: session severed");
                    return false;
                }
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = self.outbox.ready() => {
                    if !self.write_pushed(tls).await {
                        return false;
                    }
                    continue;
                }
                // Cancel-safe: a partly read packet stays in `buf` for the next round.
                p = read_packet(tls, buf, MAX_PACKET) => match p {
                    Ok(p) => p,
                    Err(_) => return false,
                },
            };
            deadline = tokio::time::Instant::now() + keep_alive.unwrap_or(far);
            let replies = match self.handle(packet).await {
                Step::Reply(replies) => replies,
                Step::Close => return false,
                Step::Disconnect => return true,
            };
            for reply in replies {
                if write_packet(tls, reply).await.is_err() {
                    return false;
                }
            }
        }
    }

    /// Writes what the cloud side queued (QoS 0, as IoT Hub sends methods and notifications),
    /// then the next cloud-to-device message if one may go out.
    async fn write_pushed<S: AsyncWrite + Unpin>(&mut self, tls: &mut S) -> bool {
        let c2d = self.next_c2d();
        for publish in self.outbox.take().into_iter().chain(c2d) {
            if write_packet(tls, Packet::Publish(publish)).await.is_err() {
                return false;
            }
        }
        true
    }

    fn next_c2d(&mut self) -> Vec<Publish> {
        self.c2d.next(self.state, &self.device, self.conn_id)
    }

    async fn handle(&mut self, packet: Packet) -> Step {
        match packet {
            Packet::Publish(p) => self.publish(p).await,
            Packet::Subscribe(s) => self.subscribe(&s),
            Packet::PingReq => Step::Reply(vec![Packet::PingResp]),
            Packet::PubAck(ack) => {
                if self.c2d.acked(self.state, &self.device, ack.pkid) {
                    self.counters.touch();
                }
                Step::Reply(self.next_c2d().into_iter().map(Packet::Publish).collect())
            }
            Packet::Disconnect => Step::Disconnect,
            _ => Step::Close,
        }
    }

    async fn publish(&mut self, p: Publish) -> Step {
        if p.qos == QoS::ExactlyOnce {
            return Step::Close;
        }
        let puback = (p.qos == QoS::AtLeastOnce).then(|| Packet::PubAck(PubAck::new(p.pkid)));
        if let Some(properties) = topics::parse_telemetry(&p.topic, &self.device) {
            return self.telemetry(&p, properties, puback).await;
        }
        let cloud_to_device = self.state.throttles.limits.cloud_to_device;
        if cloud_to_device && p.topic.starts_with("$iothub/twin/") {
            let Some(request) = device_twin::parse(&p.topic) else {
                return Step::Close;
            };
            let response = self.twin(request, &p.payload).await;
            return Step::Reply(puback.into_iter().chain(response).collect());
        }
        if cloud_to_device && p.topic.starts_with(super::methods::RESPONSE_PREFIX) {
            self.counters.touch();
            super::methods::device_answered(self.state, &self.device, &p.topic, &p.payload);
            return Step::Reply(puback.into_iter().collect());
        }
        tracing::debug!(device = %self.device, topic = %p.topic, "publish to a topic the device may not use");
        Step::Close
    }

    /// A twin GET or reported PATCH: through its throttle (held back, or answered 429), then
    /// answered from the twin store. IoT Hub only answers devices subscribed to the response
    /// topic.
    async fn twin(&mut self, request: device_twin::Request<'_>, payload: &[u8]) -> Option<Packet> {
        self.counters.touch();
        let class = match request {
            device_twin::Request::Get { .. } => Class::TwinRead,
            device_twin::Request::PatchReported { .. } => Class::TwinUpdate,
        };
        let (topic, body) = if wait_for(self.state.throttles.admit(class)).await {
            let (topic, body, outcome) = {
                let mut twins = lock(&self.state.twins);
                device_twin::answer(&mut twins, &self.device, request, payload)
            };
            let counters = &self.state.service;
            match outcome {
                Outcome::Read => bump(&counters.twin_reads),
                Outcome::Updated => bump(&counters.twin_updates),
                Outcome::InvalidJson => bump(&counters.invalid_updates),
                Outcome::Refused(super::twin::TwinError::TooLarge { .. }) => {
                    bump(&counters.too_large)
                }
                Outcome::Refused(_) => bump(&counters.invalid_updates),
            }
            (topic, body)
        } else {
            (device_twin::response_topic(429, request.rid()), Vec::new())
        };
        self.twin_subscribed
            .then(|| Packet::Publish(Publish::new(topic, QoS::AtMostOnce, body)))
    }

    /// Device-to-cloud telemetry: charged to the daily quota by IoT Hub's size (spent: the hub
    /// severs the connection), shaped by the D2C throttle, counted (messages, bytes, meters, the
    /// last one kept), appended to the Event Hub-compatible endpoint's log with its properties,
    /// acknowledged.
    async fn telemetry(
        &mut self,
        p: &Publish,
        properties: Vec<(String, String)>,
        puback: Option<Packet>,
    ) -> Step {
        let throttles = &self.state.throttles;
        // IoT Hub meters the body and the properties (reference §5).
        let size = topics::message_size(p.payload.len(), &properties);
        if !throttles.charge_message(size as usize) {
            return Step::Close;
        }
        if !wait_for(throttles.admit(Class::DeviceToCloud)).await {
            return Step::Close;
        }
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.counters.touch();
        let bytes = p.payload.len() as u64;
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        let meters = topics::meters(size, throttles.meter_bytes());
        self.counters.meters.fetch_add(meters, Ordering::Relaxed);
        let received_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        *lock(&self.counters.last_message) = Some(super::state::ReceivedMessage {
            properties: properties.clone(),
            bytes,
            size,
            received_at_ms,
        });
        let events = &self.state.events;
        events.append(&self.device, properties, p.payload.clone());
        if let Some(delay) = self.state.faults.delay_pubacks.current()
            && puback.is_some()
        {
            // A scenario's delay_pubacks fault: the message is in, its PUBACK comes late.
            tokio::time::sleep(delay).await;
        }
        Step::Reply(puback.into_iter().collect())
    }

    fn subscribe(&mut self, s: &Subscribe) -> Step {
        self.subscriptions += s.filters.len();
        let cloud_to_device = self.state.throttles.limits.cloud_to_device;
        let allowed = s
            .filters
            .iter()
            .all(|f| subscription_allowed(&f.path, &self.device, cloud_to_device));
        if !allowed || self.subscriptions > MAX_SUBSCRIPTIONS {
            return Step::Close;
        }
        let mut c2d = Vec::new();
        for f in &s.filters {
            match f.path.as_str() {
                "$iothub/twin/res/#" => self.twin_subscribed = true,
                "$iothub/twin/PATCH/properties/desired/#" => {
                    self.outbox.subscribe(Subscription::Desired)
                }
                "$iothub/methods/POST/#" => {
                    self.outbox.subscribe(Subscription::Methods);
                    // Calls waiting for this device to come online look again.
                    self.state.presence.notify_waiters();
                }
                // The only other allowed filter: the device's devicebound one.
                _ => {
                    self.c2d.subscribe(self.state, &self.device);
                    c2d.extend(self.next_c2d());
                }
            }
        }
        let suback = std::iter::once(suback(s));
        Step::Reply(suback.chain(c2d.into_iter().map(Packet::Publish)).collect())
    }

    /// Counts a drop unless the device left cleanly, and gives up the live slot if still ours.
    fn end(self, clean_exit: bool) {
        if !clean_exit {
            self.counters.drops.fetch_add(1, Ordering::Relaxed);
        }
        self.c2d.ended(self.state, &self.device, self.conn_id);
        let mut live = lock(&self.state.live);
        let disconnected = match live.get(&self.device) {
            Some(e) if e.conn_id == self.conn_id => live.remove(&self.device).is_some(),
            // A newer connection took over: the device stays connected.
            Some(_) => false,
            // Dropped by disabling or deleting the device.
            None => true,
        };
        drop(live);
        if disconnected {
            let now = now_ms();
            self.counters.state_changed_ms.store(now, Ordering::Relaxed);
        }
    }
}

/// The topic filters IoT Hub lets a device subscribe to: all of them cloud-to-device features,
/// which basic tiers lack (their hub closes the connection instead).
fn subscription_allowed(filter: &str, device: &str, cloud_to_device: bool) -> bool {
    cloud_to_device
        && (filter == format!("devices/{device}/messages/devicebound/#")
            || filter == "$iothub/twin/res/#"
            || filter == "$iothub/methods/POST/#"
            || filter == "$iothub/twin/PATCH/properties/desired/#")
}

#[cfg(test)]
#[path = "mqtt_tests.rs"]
mod tests;
