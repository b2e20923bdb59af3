//! The operator's cloud-to-device sender, as `azure-iot-hub`'s `send_c2d_message` does it:
//! `amqps://{host}:5671`, SASL `MSSBCBS`, a `$cbs` put-token with a service SAS token for the
//! hub (renewed before it expires), a sender link to `/messages/devicebound`, and each message
//! addressed `to=/devices/{id}/messages/devicebound`. The hub settles every message: Accepted,
//! or Rejected with an error that [`C2dOutcome`] names (queue full, throttled, too large,
//! unknown device). Every message carries the application property
//! [`SENT_AT_PROPERTY`](crate::iothub::SENT_AT_PROPERTY), its send time in Unix epoch
//! milliseconds, from which a receiving fleetsim device measures `c2d.delivery`.

use tokio::time::Instant;

use super::cbs::Node;
use super::connection::{Connection, Endpoint, Event};
use super::error::{AmqpError, error_parts, now_ms, now_secs};
use crate::amqp::codec::Value;
use crate::amqp::message::{self, Body, Message, Properties};
use crate::amqp::performatives::{ACCEPTED, REJECTED};
use crate::iothub::{ConnectionString, SENT_AT_PROPERTY};

/// How long the SAS tokens the sender puts are valid.
const TOKEN_LIFETIME_S: u64 = 3600;
/// Put a new token this long before the current one expires.
const TOKEN_RENEW_S: u64 = 300;

/// One cloud-to-device message to send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct C2dSend {
    pub device_id: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Absolute expiry, Unix epoch milliseconds (the hub's default TTL when absent).
    pub expiry_ms: Option<i64>,
    /// `iothub-ack`: none, positive, negative or full.
    pub ack: Option<String>,
    /// Application properties (besides the send time, which the sender adds).
    pub properties: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How the hub settled one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C2dOutcome {
    Accepted,
    /// The device already has the most messages pending (IoT Hub: 50; 403004).
    QueueFull,
    /// The hub's C2D throttle refused it (429001).
    Throttled,
    /// Over the 64 KB limit (413001).
    TooLarge,
    /// No such device in the registry (404001).
    DeviceNotFound,
    /// Rejected for another reason.
    Rejected {
        condition: String,
        description: String,
    },
}

impl C2dOutcome {
    /// Reads a rejection's error as IoT Hub words it (condition and error code name).
    fn from_rejection(error: Option<&Value>) -> C2dOutcome {
        let (condition, description) = error.map(error_parts).unwrap_or_default();
        let is = |code: &str| description.contains(code);
        if is("DeviceMaximumQueueDepthExceeded") || is("403004") {
            C2dOutcome::QueueFull
        } else if is("Throttling") || is("429001") || condition.contains("throttl") {
            C2dOutcome::Throttled
        } else if is("MessageTooLarge") || condition == "amqp:link:message-size-exceeded" {
            C2dOutcome::TooLarge
        } else if is("DeviceNotFound") || condition == "amqp:not-found" {
            C2dOutcome::DeviceNotFound
        } else {
            C2dOutcome::Rejected {
                condition,
                description,
            }
        }
    }
}

/// A connection to the hub with a sender link to `/messages/devicebound`.
pub struct C2dSender {
    conn: Connection,
    cbs: Node,
    link: u32,
    credentials: ConnectionString,
    token_expiry: u64,
}

impl C2dSender {
    /// Connects to `endpoint` and authenticates with `credentials` (a service policy's
    /// connection string: `iothubowner` or one with ServiceConnect).
    pub async fn connect(
        endpoint: &Endpoint,
        credentials: &ConnectionString,
    ) -> Result<C2dSender, AmqpError> {
        let mut conn = Connection::open(endpoint, "fleetsim-operator").await?;
        let mut cbs = Node::attach(&mut conn, "$cbs").await?;
        let token_expiry = put_token(&mut conn, &mut cbs, credentials).await?;
        let link = conn.attach_sender("/messages/devicebound").await?;
        Ok(C2dSender {
            conn,
            cbs,
            link,
            credentials: credentials.clone(),
            token_expiry,
        })
    }

    /// Sends `msg` and returns how the hub settled it. An error means the connection is no
    /// longer usable (connect again).
    pub async fn send(&mut self, msg: &C2dSend) -> Result<C2dOutcome, AmqpError> {
        if now_secs() + TOKEN_RENEW_S >= self.token_expiry {
            self.token_expiry = put_token(&mut self.conn, &mut self.cbs, &self.credentials).await?;
        }
        let payload = message::encode_message(&to_amqp(msg, now_ms()));
        let id = self.conn.send(self.link, &payload).await?;
        let after = self.conn.timeout();
        let link = self.link;
        let settled = self
            .conn
            .wait_for(Instant::now() + after, |e| match e {
                Event::Disposition(d) => d.covers(id) && (d.settled || d.state.is_some()),
                Event::Detached { handle, .. } => *handle == link,
                Event::Message { .. } => false,
            })
            .await?;
        match settled {
            None => Err(AmqpError::Timeout {
                what: "the hub's disposition of a C2D message",
                after,
            }),
            Some(Event::Disposition(d)) => Ok(outcome(d.state.as_ref())),
            Some(Event::Detached { error, .. }) => {
                let (condition, description) = error.as_ref().map(error_parts).unwrap_or_default();
                Err(AmqpError::LinkRefused {
                    address: "/messages/devicebound".into(),
                    condition,
                    description,
                })
            }
            Some(Event::Message { .. }) => Err(AmqpError::Protocol("unexpected message".into())),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.conn.close().await
    }
}

fn outcome(state: Option<&Value>) -> C2dOutcome {
    let Some(state) = state else {
        return C2dOutcome::Accepted;
    };
    match state.descriptor() {
        Some(ACCEPTED) => C2dOutcome::Accepted,
        Some(REJECTED) => {
            let error = match state {
                Value::Described(_, inner) => match inner.as_ref() {
                    Value::List(items) => items.first().filter(|v| !v.is_null()),
                    _ => None,
                },
                _ => None,
            };
            C2dOutcome::from_rejection(error)
        }
        other => C2dOutcome::Rejected {
            condition: format!("{other:?}"),
            description: "the hub neither accepted nor rejected the message".into(),
        },
    }
}

/// Puts a service SAS token for the hub on `$cbs`; returns its expiry.
async fn put_token(
    conn: &mut Connection,
    cbs: &mut Node,
    credentials: &ConnectionString,
) -> Result<u64, AmqpError> {
    let expiry = now_secs() + TOKEN_LIFETIME_S;
    let token = credentials
        .sas_token(expiry)
        .map_err(|e| AmqpError::Setup(e.to_string()))?;
    let audience = format!("https://{}", credentials.host_name);
    cbs.put_token(conn, &audience, &token).await?;
    Ok(expiry)
}

/// The AMQP message for `msg`, sent at `sent_ms`.
pub fn to_amqp(msg: &C2dSend, sent_ms: i64) -> Message {
    let text = |s: &Option<String>| s.as_deref().map(Value::str);
    let mut app: Vec<(String, Value)> = msg
        .properties
        .iter()
        .filter(|(k, _)| k != SENT_AT_PROPERTY)
        .map(|(k, v)| (k.clone(), Value::str(v)))
        .collect();
    if let Some(ack) = &msg.ack {
        app.push(("iothub-ack".into(), Value::str(ack)));
    }
    app.push((SENT_AT_PROPERTY.into(), Value::str(&sent_ms.to_string())));
    Message {
        properties: Properties {
            message_id: text(&msg.message_id),
            to: Some(format!("/devices/{}/messages/devicebound", msg.device_id)),
            correlation_id: text(&msg.correlation_id),
            content_type: msg.content_type.clone(),
            content_encoding: msg.content_encoding.clone(),
            absolute_expiry_time: msg.expiry_ms,
            ..Default::default()
        },
        application_properties: app,
        body: Body::Data(msg.body.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::performatives::error;

    #[test]
    fn rejections_name_the_hubs_errors() {
        let rejected = |condition: &str, description: &str| {
            Value::described(REJECTED, vec![error(condition, description)])
        };
        assert_eq!(outcome(None), C2dOutcome::Accepted);
        assert_eq!(
            outcome(Some(&Value::described(ACCEPTED, vec![]))),
            C2dOutcome::Accepted
        );
        assert_eq!(
            outcome(Some(&rejected(
                "amqp:resource-limit-exceeded",
                "DeviceMaximumQueueDepthExceeded (403004): full"
            ))),
            C2dOutcome::QueueFull
        );
        assert_eq!(
            outcome(Some(&rejected(
                "com.microsoft:device-container-throttled",
                "ThrottlingException (429001)"
            ))),
            C2dOutcome::Throttled
        );
        assert_eq!(
            outcome(Some(&rejected("amqp:link:message-size-exceeded", "big"))),
            C2dOutcome::TooLarge
        );
        assert_eq!(
            outcome(Some(&rejected("amqp:not-found", "DeviceNotFound (404001)"))),
            C2dOutcome::DeviceNotFound
        );
        assert!(matches!(
            outcome(Some(&rejected("com.microsoft:argument-error", "bad"))),
            C2dOutcome::Rejected { .. }
        ));
    }

    #[test]
    fn messages_are_addressed_and_stamped() {
        let m = to_amqp(
            &C2dSend {
                device_id: "d1".into(),
                message_id: Some("m1".into()),
                properties: vec![("k".into(), "v".into())],
                ack: Some("full".into()),
                body: b"hi".to_vec(),
                ..Default::default()
            },
            1_700_000_000_123,
        );
        assert_eq!(
            m.properties.to.as_deref(),
            Some("/devices/d1/messages/devicebound")
        );
        assert_eq!(m.properties.message_id, Some(Value::str("m1")));
        assert_eq!(
            m.application_property(SENT_AT_PROPERTY),
            Some(&Value::str("1700000000123"))
        );
        assert_eq!(
            m.application_property("iothub-ack"),
            Some(&Value::str("full"))
        );
        assert_eq!(m.application_property("k"), Some(&Value::str("v")));
    }
}
