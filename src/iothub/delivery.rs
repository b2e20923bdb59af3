//! What a device session hears from the hub, whichever MQTT client carries it (rumqttc's in
//! [`super::mqtt`], fleetsim's own in [`super::lean`]): a message, or the loss of the connection.
//! A leaf, so both clients share it without importing each other.

use bytes::Bytes;

/// A message the hub sent the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
}

/// What a session hears from the hub between its own requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(Message),
    /// The connection was lost, with why.
    Closed(String),
}

/// How many of the hub's messages a session keeps while it waits for an acknowledgement; beyond
/// that the oldest are dropped (the hub sends method requests and desired patches at QoS 0
/// anyway: a device that cannot take them loses them).
pub const HELD_MAX: usize = 256;

/// Keeps `m` for the session's next `incoming`, dropping the oldest beyond [`HELD_MAX`].
pub fn hold(held: &mut std::collections::VecDeque<Message>, m: Message) {
    if held.len() == HELD_MAX {
        held.pop_front();
        tracing::debug!("a session dropped a message from the hub it had no room for");
    }
    held.push_back(m);
}
