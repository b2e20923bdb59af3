//! A device's MQTT session over rumqttc's client (`fleet.transport_impl: rumqttc`, the default):
//! a small driver task polls the rumqttc event loop and forwards PUBACKs, SUBACKs, the messages
//! the hub sends the device (twin answers, desired properties, method requests, cloud-to-device
//! messages) and the loss of the connection to the session. A device that never subscribes gets
//! no messages and holds nothing for them: the queue of messages that arrived while it waited for
//! a PUBACK or SUBACK allocates only when one does.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::delivery::{Incoming, Message, hold};
use super::error::HubError;
use super::tls::connack_code;

/// Polls a connected session's event loop, passing PUBACKs, SUBACKs and the hub's messages on,
/// until it disconnects or fails (the failure is passed on too).
async fn drive(mut eventloop: EventLoop, events: mpsc::UnboundedSender<SessionEvent>) {
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => SessionEvent::PubAck,
            Ok(Event::Incoming(Packet::SubAck(ack))) => SessionEvent::SubAck(
                ack.return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
            ),
            Ok(Event::Incoming(Packet::Publish(p))) => SessionEvent::Message(Box::new(Message {
                topic: p.topic,
                payload: p.payload,
            })),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => {
                let closed = SessionEvent::Closed(connection_error(e).to_string());
                let _ = events.send(closed);
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

enum SessionEvent {
    PubAck,
    /// A SUBACK: whether every filter was granted.
    SubAck(bool),
    /// Boxed, so a session's channel of events stays as small as it was without messages.
    Message(Box<Message>),
    Closed(String),
}

/// A live connection of one device over rumqttc's client.
pub struct RumqttcSession {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    driver: JoinHandle<()>,
    ack_timeout: Duration,
    /// Messages that arrived while the session waited for a PUBACK or SUBACK, oldest first.
    held: VecDeque<Message>,
}

impl RumqttcSession {
    /// Waits for the CONNACK on `eventloop` (within `connect_timeout`), then hands the event
    /// loop to a driver task of its own.
    pub(super) async fn open(
        mut eventloop: EventLoop,
        client: AsyncClient,
        connect_timeout: Duration,
        ack_timeout: Duration,
    ) -> Result<Self, HubError> {
        let connack = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(connack_error(e)),
                }
            }
        };
        match tokio::time::timeout(connect_timeout, connack).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(HubError::Timeout),
        }
        // Unbounded, so the driver never waits on the device: a device that is itself waiting
        // for room in the request channel (publishing answers) while the hub sends it more
        // would otherwise wait for a driver that waits for it. What the hub may send is bounded
        // by its own limits; an idle session's channel costs what a bounded one does.
        let (events_tx, events) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(eventloop, events_tx));
        Ok(Self {
            client,
            events,
            driver,
            ack_timeout,
            held: VecDeque::new(),
        })
    }

    /// Publishes and, for QoS 1, waits for the PUBACK.
    pub async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        at_least_once: bool,
    ) -> Result<(), HubError> {
        let qos = if at_least_once {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.client
            .publish(topic, qos, false, payload)
            .await
            .map_err(|e| HubError::Closed(e.to_string()))?;
        if !at_least_once {
            return Ok(());
        }
        let acked = async {
            loop {
                match self.events.recv().await {
                    Some(SessionEvent::PubAck) => return Ok(()),
                    Some(SessionEvent::SubAck(_)) => continue,
                    Some(SessionEvent::Message(m)) => hold(&mut self.held, *m),
                    Some(SessionEvent::Closed(reason)) => return Err(HubError::Closed(reason)),
                    None => return Err(HubError::Closed("connection driver stopped".into())),
                }
            }
        };
        match tokio::time::timeout(self.ack_timeout, acked).await {
            Ok(result) => result,
            Err(_) => Err(HubError::Timeout),
        }
    }

    /// Subscribes to `filters` (each with QoS 1 when `true`, else 0) and waits for the SUBACK.
    /// A refused filter is an error (IoT Hub closes the connection instead, which is one too).
    pub async fn subscribe(&mut self, filters: Vec<(String, bool)>) -> Result<(), HubError> {
        let filters = filters.into_iter().map(|(path, at_least_once)| {
            let qos = match at_least_once {
                true => QoS::AtLeastOnce,
                false => QoS::AtMostOnce,
            };
            SubscribeFilter::new(path, qos)
        });
        self.client
            .subscribe_many(filters)
            .await
            .map_err(|e| HubError::Closed(e.to_string()))?;
        let granted = async {
            loop {
                match self.events.recv().await {
                    Some(SessionEvent::SubAck(true)) => return Ok(()),
                    Some(SessionEvent::SubAck(false)) => {
                        return Err(HubError::Closed("the hub refused a subscription".into()));
                    }
                    // A late PUBACK, after its publish timed out.
                    Some(SessionEvent::PubAck) => continue,
                    Some(SessionEvent::Message(m)) => hold(&mut self.held, *m),
                    Some(SessionEvent::Closed(reason)) => return Err(HubError::Closed(reason)),
                    None => return Err(HubError::Closed("connection driver stopped".into())),
                }
            }
        };
        match tokio::time::timeout(self.ack_timeout, granted).await {
            Ok(result) => result,
            Err(_) => Err(HubError::Timeout),
        }
    }

    /// The next message from the hub, or the loss of the connection. Between requests no
    /// acknowledgement is awaited, so a late one (after a timeout) is skipped here.
    pub async fn incoming(&mut self) -> Incoming {
        if let Some(m) = self.held.pop_front() {
            return Incoming::Message(m);
        }
        loop {
            match self.events.recv().await {
                Some(SessionEvent::PubAck | SessionEvent::SubAck(_)) => continue,
                Some(SessionEvent::Message(m)) => return Incoming::Message(*m),
                Some(SessionEvent::Closed(reason)) => return Incoming::Closed(reason),
                None => return Incoming::Closed("connection driver stopped".into()),
            }
        }
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

    /// Sends DISCONNECT and waits briefly for it to leave.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        // Dropping `self` aborts the driver if it has not finished by then.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.driver).await;
    }
}

impl Drop for RumqttcSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A failure while waiting for CONNACK. IoT Hub answers bad credentials with CONNACK 5 but
/// throttles (and a spent quota) by closing the connection without a CONNACK.
fn connack_error(e: ConnectionError) -> HubError {
    use rumqttc::StateError;
    match e {
        ConnectionError::Io(e) | ConnectionError::MqttState(StateError::Io(e))
            if closed_by_peer(&e) =>
        {
            HubError::ClosedBeforeConnack
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => HubError::ClosedBeforeConnack,
        // DNS, refused or unreachable: the hub was never reached.
        ConnectionError::Io(e) => HubError::Transport(e.to_string()),
        other => connection_error(other),
    }
}

fn closed_by_peer(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionAborted | ConnectionReset | BrokenPipe
    )
}

fn connection_error(e: ConnectionError) -> HubError {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            HubError::ConnectRefused(connack_code(code).to_string())
        }
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => HubError::Timeout,
        ConnectionError::Tls(e) => HubError::Tls(e.to_string()),
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            HubError::Transport(e.to_string())
        }
        ConnectionError::Io(e) => HubError::Closed(e.to_string()),
        other => HubError::Closed(other.to_string()),
    }
}
