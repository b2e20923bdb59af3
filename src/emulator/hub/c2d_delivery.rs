//! Cloud-to-device delivery on a device's MQTT connection (reference §1.3 CleanSession, §3): the
//! hub's [`C2dQueues`](crate::emulator::amqp::C2dQueues) (filled by the AMQP endpoint) handed
//! out to a device subscribed to `devices/{id}/messages/devicebound/#`, each message a QoS 1
//! PUBLISH on `devices/{id}/messages/devicebound/{property bag}` that the device's PUBACK
//! completes (the `positive` feedback, when asked for, recorded then).
//!
//! A window of [`WINDOW`] messages in flight per connection, oldest first, each acknowledged by
//! its own PUBACK (matched by packet id). IoT Hub's MQTT side does not wait for one PUBACK before
//! the next delivery: a device can hold several unacknowledged C2D messages (the C# SDK's
//! "PUBACK packets in the order in which the corresponding PUBLISH packets were received" error,
//! azure-iot-sdk-csharp#157), and Microsoft's IoT protocol gateway, the MQTT-to-IoT Hub bridge
//! of the same design, prefetches up to 50 (`MaxPendingOutboundMessages`) for a device. With a
//! queue of at most 50 the window never binds there, so everything queued flows at once and a
//! burst does not cost a round trip per message. Order holds across redeliveries: a message put
//! back keeps its place in the queue. A message whose PUBACK never comes stays in flight on that
//! connection (MQTT 3.1.1 redelivers only on a new connection); when the connection goes away it
//! is put back and the device's next connection gets it again.
//!
//! Sessions: a CleanSession 1 connect drops every queued message (feedback `purged`) and any
//! subscription an earlier connection left; a subscription made on a CleanSession 0 connection
//! outlives it, so queued messages flow as soon as the device is back with CleanSession 0, before
//! it subscribes again. Expired messages are dropped by the queues (feedback `expired`) and
//! never delivered; a redelivery carries the DUP flag, and a message that went out
//! `maxDeliveryCount` (10) times without a PUBACK is dead-lettered (`deliveryCountExceeded`)
//! rather than put back again, so a device that crashes on it does not get it forever.

use std::collections::VecDeque;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;

use super::state::HubState;
use super::twin::iso8601;
use crate::emulator::amqp::C2dMessage;
use crate::emulator::amqp::c2d::{Ack, FeedbackStatus};
use crate::iothub::topics;
use crate::sync::lock;

/// The most C2D messages out to one connection at a time.
pub(super) const WINDOW: usize = crate::emulator::amqp::c2d::MAX_PENDING;

/// One connection's side of C2D delivery.
pub(super) struct C2dDelivery {
    /// Whether messages may flow: the device subscribed on this connection, or on an earlier
    /// CleanSession 0 one and came back with CleanSession 0.
    subscribed: bool,
    /// Whether the subscription outlives the connection (CleanSession 0).
    persistent: bool,
    /// The messages out to the device, oldest first: packet id and the queues' token.
    in_flight: VecDeque<(u16, u64)>,
    next_pkid: u16,
}

impl C2dDelivery {
    /// The C2D side of a new connection of `device`: with CleanSession 1 the device's queue and
    /// remembered subscription go; with 0 a remembered subscription is picked up.
    pub(super) fn connected(state: &HubState, device: &str, clean_session: bool) -> Self {
        let subscribed = if clean_session {
            lock(&state.c2d_sessions).remove(device);
            state.c2d.purge(device);
            false
        } else {
            lock(&state.c2d_sessions).contains(device)
        };
        Self {
            subscribed,
            persistent: !clean_session,
            in_flight: VecDeque::new(),
            next_pkid: 1,
        }
    }

    /// Whether messages flow to this connection.
    pub(super) fn subscribed(&self) -> bool {
        self.subscribed
    }

    /// The device subscribed to its devicebound filter.
    pub(super) fn subscribe(&mut self, state: &HubState, device: &str) {
        self.subscribed = true;
        if self.persistent {
            lock(&state.c2d_sessions).insert(device.to_string());
        }
    }

    /// The messages that may go out now as PUBLISHes, oldest first, marked in flight to
    /// connection `conn_id`: none when not subscribed, the window is full or nothing is queued.
    pub(super) fn next(&mut self, state: &HubState, device: &str, conn_id: u64) -> Vec<Publish> {
        let mut out = Vec::new();
        while self.subscribed && self.in_flight.len() < WINDOW {
            let Some(next) = state.c2d.next_for(device, conn_id) else {
                break;
            };
            let pkid = self.packet_id();
            self.in_flight.push_back((pkid, next.token));
            let msg = &next.msg;
            let mut publish = Publish::new(delivery_topic(msg), QoS::AtLeastOnce, msg.body.clone());
            publish.pkid = pkid;
            // MQTT 3.1.1 §4.4: a message sent again after a reconnect carries DUP.
            publish.dup = next.deliveries > 1;
            out.push(publish);
        }
        out
    }

    /// A packet id not in flight (1..=65535; the window is far smaller than the id space).
    fn packet_id(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.iter().any(|(p, _)| *p == pkid) {
                return pkid;
            }
        }
    }

    /// A PUBACK from the device: completes the message in flight under `pkid`. False for any
    /// other PUBACK (late, unknown or duplicated: ignored, as MQTT brokers do).
    pub(super) fn acked(&mut self, state: &HubState, device: &str, pkid: u16) -> bool {
        let Some(at) = self.in_flight.iter().position(|(p, _)| *p == pkid) else {
            return false;
        };
        let Some((_, token)) = self.in_flight.remove(at) else {
            return false;
        };
        // None when the message expired or was purged while out: nothing left to complete.
        let _ = state
            .c2d
            .settle_token(device, token, FeedbackStatus::Success);
        true
    }

    /// The connection ended: what it held unacknowledged goes back for redelivery.
    pub(super) fn ended(&self, state: &HubState, device: &str, conn_id: u64) {
        if !self.in_flight.is_empty() {
            state.c2d.release(device, conn_id);
        }
    }
}

/// The topic a message goes out on: system properties first (IoT Hub's names), then
/// `iothub-ack` (always, `none` included, as a real hub's C2D topics show it and the device SDKs
/// read it), then the application properties.
fn delivery_topic(msg: &C2dMessage) -> String {
    let to = format!("/devices/{}/messages/devicebound", msg.device_id);
    let expiry = msg.expiry_ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(iso8601)
    });
    let ack = match msg.ack {
        Ack::None => "none",
        Ack::Positive => "positive",
        Ack::Negative => "negative",
        Ack::Full => "full",
    };
    let system = [
        ("$.mid", msg.message_id.as_deref()),
        ("$.cid", msg.correlation_id.as_deref()),
        ("$.uid", msg.user_id.as_deref()),
        ("$.to", Some(to.as_str())),
        ("$.ct", msg.content_type.as_deref()),
        ("$.ce", msg.content_encoding.as_deref()),
        ("$.exp", expiry.as_deref()),
        ("iothub-ack", Some(ack)),
    ];
    let mut properties: Vec<(&str, Option<&str>)> = system
        .into_iter()
        .filter_map(|(k, v)| Some((k, Some(v?))))
        .collect();
    properties.extend(
        msg.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref())),
    );
    topics::c2d_delivery(&msg.device_id, &properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_topic_carries_system_and_application_properties() {
        let msg = C2dMessage {
            device_id: "dev-1".into(),
            message_id: Some("m 1".into()),
            correlation_id: Some("c/1".into()),
            user_id: None,
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            expiry_ms: Some(1_700_000_000_123),
            ack: Ack::Positive,
            properties: vec![
                ("colour".into(), Some("blue".into())),
                ("flag".into(), None),
                ("empty".into(), Some(String::new())),
            ],
            body: Bytes::from_static(b"x"),
        };
        assert_eq!(
            delivery_topic(&msg),
            "devices/dev-1/messages/devicebound/%24.mid=m%201&%24.cid=c%2F1\
             &%24.to=%2Fdevices%2Fdev-1%2Fmessages%2Fdevicebound&%24.ct=application%2Fjson\
             &%24.ce=utf-8&%24.exp=2023-11-14T22%3A13%3A20.1230000Z&iothub-ack=positive\
             &colour=blue&flag&empty="
        );
    }
}
