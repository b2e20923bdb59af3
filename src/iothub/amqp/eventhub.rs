//! The backend's reader of an IoT hub's built-in Event Hub-compatible endpoint, as
//! `azure-eventhub`'s `EventHubConsumerClient` reads it: the connection string the portal shows
//! (`Endpoint=sb://…/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…`), a `$cbs` token
//! signed the Event Hubs way for `sb://{host}/{entity}`, a `$management` READ of the entity for
//! its partition ids, and one receiver link per partition of a consumer group, from a start
//! position (`@latest` by default). Every event comes back with its partition, IoT Hub's
//! annotations (`iothub-connection-device-id`, `x-opt-sequence-number`, `x-opt-enqueued-time`),
//! its application properties and body.

use std::collections::HashMap;

use tokio::time::Instant;

use super::cbs::Node;
use super::connection::{Connection, Endpoint, Event};
use super::error::{AmqpError, error_parts, now_secs};
use crate::amqp::codec::Value;
use crate::amqp::message;
use crate::iothub::sas;

const TOKEN_LIFETIME_S: u64 = 3600;
const TOKEN_RENEW_S: u64 = 300;
/// Events each partition's receiver may have in flight.
const CREDIT: u32 = 300;
const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";

/// An Event Hub connection string. `Debug` leaves the key out.
#[derive(Clone)]
pub struct EventHubConnectionString {
    /// The namespace host (`…servicebus.windows.net`, or the hub emulator's host name).
    pub host: String,
    pub key_name: String,
    key: String,
    /// The Event Hub (an IoT hub's built-in endpoint: the hub's name).
    pub entity: String,
}

impl std::fmt::Debug for EventHubConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EventHubConnectionString(Endpoint=sb://{}/;SharedAccessKeyName={};EntityPath={})",
            self.host, self.key_name, self.entity
        )
    }
}

impl EventHubConnectionString {
    pub fn parse(s: &str) -> Result<Self, AmqpError> {
        let bad = |m: String| AmqpError::ConnectionString(m);
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                bad(format!(
                    "'{}' has no '='",
                    part.split('=').next().unwrap_or("")
                ))
            })?;
            fields.insert(k.trim(), v.trim());
        }
        let need = |k: &str| {
            fields
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string())
                .ok_or_else(|| bad(format!("{k} is missing")))
        };
        let endpoint = need("Endpoint")?;
        let host = endpoint
            .strip_prefix("sb://")
            .ok_or_else(|| bad("Endpoint must start with sb://".into()))?
            .trim_end_matches('/')
            .to_string();
        if host.is_empty() || host.contains('/') {
            return Err(bad(format!("Endpoint host '{host}' is not a host name")));
        }
        Ok(Self {
            host,
            key_name: need("SharedAccessKeyName")?,
            key: need("SharedAccessKey")?,
            entity: need("EntityPath")?,
        })
    }

    /// A token for the entity, valid until `expiry`.
    fn token(&self, expiry: u64) -> String {
        sas::service_bus_token(&self.audience(), &self.key, &self.key_name, expiry)
    }

    fn audience(&self) -> String {
        format!("sb://{}/{}", self.host, self.entity)
    }
}

/// Where each partition's receiver starts.
#[derive(Debug, Clone, PartialEq)]
pub enum StartPosition {
    /// Only events enqueued from now on.
    Latest,
    /// The oldest event retained.
    Earliest,
    /// After this sequence number.
    AfterSequence(i64),
    /// Enqueued after this time (Unix epoch milliseconds).
    EnqueuedAfter(i64),
}

impl StartPosition {
    fn selector(&self) -> String {
        match self {
            StartPosition::Latest => "amqp.annotation.x-opt-offset > '@latest'".into(),
            StartPosition::Earliest => "amqp.annotation.x-opt-offset > '-1'".into(),
            StartPosition::AfterSequence(n) => {
                format!("amqp.annotation.x-opt-sequence-number > '{n}'")
            }
            StartPosition::EnqueuedAfter(ms) => {
                format!("amqp.annotation.x-opt-enqueued-time > '{ms}'")
            }
        }
    }

    fn filter(&self) -> Value {
        let described = Value::Described(
            Box::new(Value::sym(SELECTOR_FILTER)),
            Box::new(Value::str(&self.selector())),
        );
        Value::Map(vec![(Value::sym(SELECTOR_FILTER), described)])
    }
}

/// One event as the backend read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    pub partition: String,
    /// `iothub-connection-device-id`: the device that sent it.
    pub device_id: Option<String>,
    pub sequence_number: Option<i64>,
    pub enqueued_ms: Option<i64>,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    /// Application properties, as text.
    pub properties: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedEvent {
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn from_message(partition: String, m: &message::Message) -> Self {
        let annotation = |k: &str| {
            m.message_annotations
                .iter()
                .find(|(a, _)| a.as_text() == Some(k))
                .map(|(_, v)| v)
        };
        let number = |v: &Value| match v {
            Value::Long(n) | Value::Timestamp(n) => Some(*n),
            Value::Int(n) => Some(i64::from(*n)),
            other => other.as_u64().and_then(|u| i64::try_from(u).ok()),
        };
        ReceivedEvent {
            partition,
            device_id: annotation("iothub-connection-device-id").map(Value::to_string),
            sequence_number: annotation("x-opt-sequence-number").and_then(number),
            enqueued_ms: annotation("x-opt-enqueued-time").and_then(number),
            message_id: m.properties.message_id.as_ref().map(Value::to_string),
            content_type: m.properties.content_type.clone(),
            properties: m
                .application_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            body: m.body_bytes(),
        }
    }
}

/// A consumer of every partition of one consumer group.
pub struct EventHubConsumer {
    conn: Connection,
    cbs: Node,
    credentials: EventHubConnectionString,
    token_expiry: u64,
    /// Receiver handle → partition id.
    partitions: HashMap<u32, String>,
    ids: Vec<String>,
}

impl EventHubConsumer {
    /// Connects to `endpoint` (the namespace host of `credentials`), reads the partition ids and
    /// attaches a receiver to each partition of `consumer_group` from `start`.
    pub async fn connect(
        endpoint: &Endpoint,
        credentials: &EventHubConnectionString,
        consumer_group: &str,
        start: &StartPosition,
    ) -> Result<EventHubConsumer, AmqpError> {
        let mut conn = Connection::open(endpoint, "fleetsim-backend").await?;
        let mut cbs = Node::attach(&mut conn, "$cbs").await?;
        let expiry = now_secs() + TOKEN_LIFETIME_S;
        let token = credentials.token(expiry);
        cbs.put_token(&mut conn, &credentials.audience(), &token)
            .await?;
        let ids = partition_ids(&mut conn, credentials, &token).await?;
        let mut partitions = HashMap::new();
        for id in &ids {
            let address = format!(
                "amqps://{}/{}/ConsumerGroups/{consumer_group}/Partitions/{id}",
                credentials.host, credentials.entity
            );
            let handle = conn
                .attach_receiver(&address, Some(start.filter()), CREDIT)
                .await?;
            partitions.insert(handle, id.clone());
        }
        Ok(EventHubConsumer {
            conn,
            cbs,
            credentials: credentials.clone(),
            token_expiry: expiry,
            partitions,
            ids,
        })
    }

    /// The entity's partition ids, as `$management` listed them.
    pub fn partition_ids(&self) -> &[String] {
        &self.ids
    }

    /// The next event from any partition; `None` at `deadline`. A detached partition receiver
    /// or a lost connection is an error: connect again.
    pub async fn next(&mut self, deadline: Instant) -> Result<Option<ReceivedEvent>, AmqpError> {
        if now_secs() + TOKEN_RENEW_S >= self.token_expiry {
            let expiry = now_secs() + TOKEN_LIFETIME_S;
            let token = self.credentials.token(expiry);
            let audience = self.credentials.audience();
            self.cbs
                .put_token(&mut self.conn, &audience, &token)
                .await?;
            self.token_expiry = expiry;
        }
        loop {
            let Some(event) = self.conn.next_event(deadline).await? else {
                return Ok(None);
            };
            match event {
                Event::Message { handle, payload } => {
                    let Some(partition) = self.partitions.get(&handle) else {
                        continue;
                    };
                    let m = message::decode(&payload)?;
                    return Ok(Some(ReceivedEvent::from_message(partition.clone(), &m)));
                }
                Event::Detached { handle, error } if self.partitions.contains_key(&handle) => {
                    let (condition, description) =
                        error.as_ref().map(error_parts).unwrap_or_default();
                    return Err(AmqpError::LinkRefused {
                        address: format!("partition {}", self.partitions[&handle]),
                        condition,
                        description,
                    });
                }
                _ => {}
            }
        }
    }

    pub async fn close(self) {
        self.conn.close().await
    }
}

/// `$management` READ of the entity: its partition ids.
async fn partition_ids(
    conn: &mut Connection,
    credentials: &EventHubConnectionString,
    token: &str,
) -> Result<Vec<String>, AmqpError> {
    let mut management = Node::attach(conn, "$management").await?;
    let props = vec![
        ("operation".to_string(), Value::str("READ")),
        ("name".to_string(), Value::str(&credentials.entity)),
        ("type".to_string(), Value::str("com.microsoft:eventhub")),
        ("security_token".to_string(), Value::str(token)),
    ];
    let reply = management.request(conn, props, Value::Null).await?;
    let body = match &reply.body {
        message::Body::Value(v) => v,
        _ => {
            return Err(AmqpError::Protocol(
                "$management answered without a map".into(),
            ));
        }
    };
    let ids: Vec<String> = match body.map_get("partition_ids") {
        Some(Value::Array(items) | Value::List(items)) => {
            items.iter().map(Value::to_string).collect()
        }
        _ => Vec::new(),
    };
    if ids.is_empty() || ids.len() > 1024 {
        return Err(AmqpError::Protocol(format!(
            "$management listed {} partitions",
            ids.len()
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_parse_and_hide_their_key() {
        let cs = EventHubConnectionString::parse(
            "Endpoint=sb://ihsuprod.servicebus.windows.net/;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0PQ==;EntityPath=myhub",
        )
        .unwrap();
        assert_eq!(cs.host, "ihsuprod.servicebus.windows.net");
        assert_eq!(
            (cs.key_name.as_str(), cs.entity.as_str()),
            ("service", "myhub")
        );
        assert!(!format!("{cs:?}").contains("c2Vj"));
        assert_eq!(cs.audience(), "sb://ihsuprod.servicebus.windows.net/myhub");
        for bad in [
            "Endpoint=https://h/;SharedAccessKeyName=a;SharedAccessKey=b;EntityPath=c",
            "Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b",
            "Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey;EntityPath=c",
        ] {
            assert!(EventHubConnectionString::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_positions_are_selector_filters() {
        assert_eq!(
            StartPosition::Latest.selector(),
            "amqp.annotation.x-opt-offset > '@latest'"
        );
        assert_eq!(
            StartPosition::AfterSequence(5).selector(),
            "amqp.annotation.x-opt-sequence-number > '5'"
        );
        let f = StartPosition::Earliest.filter();
        assert!(f.map_get(SELECTOR_FILTER).is_some());
    }
}
