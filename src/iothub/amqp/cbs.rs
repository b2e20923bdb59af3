//! Request/response nodes as the hub serves them: a sender link to the node and a receiver
//! link from it, requests carrying `message-id` and `reply-to`, responses matched by
//! `correlation-id` and judged by their `status-code` application property. `$cbs` put-token
//! (a SAS token for an audience) and `$management` reads both go through [`Node`].

use tokio::time::Instant;

use super::connection::{Connection, Event};
use super::error::{AmqpError, error_parts};
use crate::amqp::codec::Value;
use crate::amqp::message::{self, Body, Message, Properties};
use crate::amqp::performatives::ACCEPTED;

/// The token type of SAS tokens on `$cbs`.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// A request/response node (`$cbs`, `$management`) attached on a connection.
pub struct Node {
    name: &'static str,
    requests: u32,
    responses: u32,
    reply_to: String,
    next_id: u64,
}

/// A response's status code, however the node typed it.
fn status_of(m: &Message) -> Option<i64> {
    let v = m
        .application_property("status-code")
        .or_else(|| m.application_property("statusCode"))?;
    match v {
        Value::Int(i) => Some(i64::from(*i)),
        Value::Long(i) => Some(*i),
        Value::Short(i) => Some(i64::from(*i)),
        other => other.as_u64().and_then(|u| i64::try_from(u).ok()),
    }
}

impl Node {
    /// Attaches the link pair of node `name`.
    pub async fn attach(conn: &mut Connection, name: &'static str) -> Result<Node, AmqpError> {
        let requests = conn.attach_sender(name).await?;
        let responses = conn.attach_receiver(name, None, 16).await?;
        let reply_to = conn.link_name(responses).unwrap_or(name).to_string();
        Ok(Node {
            name,
            requests,
            responses,
            reply_to,
            next_id: 1,
        })
    }

    /// Sends a request with `properties` and `body`; returns the response once its status is
    /// 2xx, else [`AmqpError::Status`].
    pub async fn request(
        &mut self,
        conn: &mut Connection,
        properties: Vec<(String, Value)>,
        body: Value,
    ) -> Result<Message, AmqpError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Message {
            properties: Properties {
                message_id: Some(Value::Ulong(id)),
                reply_to: Some(self.reply_to.clone()),
                ..Default::default()
            },
            application_properties: properties,
            body: Body::Value(body),
            ..Default::default()
        };
        let after = conn.timeout();
        let deadline = Instant::now() + after;
        let delivery = conn
            .send(self.requests, &message::encode_message(&request))
            .await?;
        let (node, responses) = (self.name, self.responses);
        let timeout = || AmqpError::Timeout {
            what: "a request to the hub",
            after,
        };
        let wanted = |e: &Event| match e {
            Event::Disposition(d) => d.covers(delivery),
            Event::Message { handle, .. } => *handle == responses,
            Event::Detached { handle, .. } => *handle == responses,
        };
        loop {
            let event = conn.wait_for(deadline, wanted).await?.ok_or_else(timeout)?;
            match event {
                Event::Disposition(d) => {
                    let state = d.state.as_ref().and_then(Value::descriptor);
                    if state.is_some_and(|s| s != ACCEPTED) {
                        return Err(AmqpError::Status {
                            node,
                            status: 400,
                            description: format!("the request was not accepted: {:?}", d.state),
                        });
                    }
                }
                Event::Message { payload, .. } => {
                    let m = message::decode(&payload)?;
                    if m.properties.correlation_id != Some(Value::Ulong(id)) {
                        tracing::debug!(node, "a response to another request ignored");
                        continue;
                    }
                    return match status_of(&m) {
                        Some(status) if (200..300).contains(&status) => Ok(m),
                        status => Err(AmqpError::Status {
                            node,
                            status: status.and_then(|s| i32::try_from(s).ok()).unwrap_or(0),
                            description: m
                                .application_property("status-description")
                                .map(Value::to_string)
                                .unwrap_or_default(),
                        }),
                    };
                }
                Event::Detached { error, .. } => {
                    let (condition, description) =
                        error.as_ref().map(error_parts).unwrap_or_default();
                    return Err(AmqpError::LinkRefused {
                        address: node.to_string(),
                        condition,
                        description,
                    });
                }
            }
        }
    }

    /// `$cbs` put-token: `token` (a SAS token) for `audience`.
    pub async fn put_token(
        &mut self,
        conn: &mut Connection,
        audience: &str,
        token: &str,
    ) -> Result<(), AmqpError> {
        let props = vec![
            ("operation".to_string(), Value::str("put-token")),
            ("type".to_string(), Value::str(SAS_TOKEN_TYPE)),
            ("name".to_string(), Value::str(audience)),
        ];
        self.request(conn, props, Value::str(token)).await?;
        Ok(())
    }
}
