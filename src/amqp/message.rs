//! The AMQP message format (part 3.2): the sections this server reads from C2D sends and
//! management requests, and writes into Event Hub deliveries and management replies.

use super::codec::{DecodeError, Decoder, Value, encode};

const HEADER: u64 = 0x70;
const DELIVERY_ANNOTATIONS: u64 = 0x71;
const MESSAGE_ANNOTATIONS: u64 = 0x72;
const PROPERTIES: u64 = 0x73;
const APPLICATION_PROPERTIES: u64 = 0x74;
const DATA: u64 = 0x75;
const AMQP_SEQUENCE: u64 = 0x76;
const AMQP_VALUE: u64 = 0x77;
const FOOTER: u64 = 0x78;

/// The immutable properties section (part 3.2.4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    pub message_id: Option<Value>,
    pub user_id: Option<Vec<u8>>,
    pub to: Option<String>,
    pub subject: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<Value>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub absolute_expiry_time: Option<i64>,
    pub creation_time: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// The concatenation of the data sections (none: empty).
    Data(Vec<u8>),
    Value(Value),
    Sequence(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub message_annotations: Vec<(Value, Value)>,
    pub properties: Properties,
    pub application_properties: Vec<(String, Value)>,
    pub body: Body,
}

impl Default for Message {
    fn default() -> Self {
        Self {
            message_annotations: Vec::new(),
            properties: Properties::default(),
            application_properties: Vec::new(),
            body: Body::Data(Vec::new()),
        }
    }
}

impl Message {
    pub fn application_property(&self, key: &str) -> Option<&Value> {
        self.application_properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The body as bytes: data sections as they are, a string or binary value as its content.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::Data(b) => b.clone(),
            Body::Value(Value::String(s)) => s.as_bytes().to_vec(),
            Body::Value(Value::Binary(b)) => b.clone(),
            Body::Value(v) => {
                let mut out = Vec::new();
                encode(v, &mut out);
                out
            }
            Body::Sequence(items) => {
                let mut out = Vec::new();
                for v in items {
                    encode(v, &mut out);
                }
                out
            }
        }
    }
}

fn opt(v: &Value) -> Option<&Value> {
    (!v.is_null()).then_some(v)
}

fn properties(items: &[Value]) -> Properties {
    let text = |i: usize| items.get(i).and_then(Value::as_text).map(str::to_string);
    let ts = |i: usize| match items.get(i) {
        Some(Value::Timestamp(ms)) => Some(*ms),
        _ => None,
    };
    Properties {
        message_id: items.first().and_then(opt).cloned(),
        user_id: match items.get(1) {
            Some(Value::Binary(b)) => Some(b.clone()),
            _ => None,
        },
        to: text(2),
        subject: text(3),
        reply_to: text(4),
        correlation_id: items.get(5).and_then(opt).cloned(),
        content_type: text(6),
        content_encoding: text(7),
        absolute_expiry_time: ts(8),
        creation_time: ts(9),
    }
}

/// Decodes a whole message from the payload of its transfers.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut d = Decoder::new(bytes);
    let mut m = Message::default();
    let mut data = Vec::new();
    while !d.is_empty() {
        let Value::Described(descriptor, inner) = d.value()? else {
            return Err(DecodeError::Invalid("message section is not described"));
        };
        let code = descriptor
            .as_u64()
            .ok_or(DecodeError::Invalid("section with a symbolic descriptor"))?;
        match (code, *inner) {
            (HEADER | DELIVERY_ANNOTATIONS | FOOTER, _) => {}
            (MESSAGE_ANNOTATIONS, Value::Map(entries)) => m.message_annotations = entries,
            (PROPERTIES, Value::List(items)) => m.properties = properties(&items),
            (APPLICATION_PROPERTIES, Value::Map(entries)) => {
                for (k, v) in entries {
                    let Value::String(k) = k else {
                        return Err(DecodeError::Invalid(
                            "application property key is not a string",
                        ));
                    };
                    m.application_properties.push((k, v));
                }
            }
            (DATA, Value::Binary(b)) => data.extend_from_slice(&b),
            (AMQP_VALUE, v) => m.body = Body::Value(v),
            (AMQP_SEQUENCE, Value::List(items)) => m.body = Body::Sequence(items),
            (MESSAGE_ANNOTATIONS | PROPERTIES | APPLICATION_PROPERTIES | DATA, _) => {
                return Err(DecodeError::Invalid("message section of the wrong type"));
            }
            _ => return Err(DecodeError::Invalid("unknown message section")),
        }
    }
    if !data.is_empty() || matches!(m.body, Body::Data(_)) {
        m.body = Body::Data(data);
    }
    Ok(m)
}

fn encode_properties(p: &Properties) -> Option<Value> {
    let text = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::str);
    let sym = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::sym);
    let ts = |t: &Option<i64>| t.map_or(Value::Null, Value::Timestamp);
    let mut fields = vec![
        p.message_id.clone().unwrap_or(Value::Null),
        p.user_id.clone().map_or(Value::Null, Value::Binary),
        text(&p.to),
        text(&p.subject),
        text(&p.reply_to),
        p.correlation_id.clone().unwrap_or(Value::Null),
        sym(&p.content_type),
        sym(&p.content_encoding),
        ts(&p.absolute_expiry_time),
        ts(&p.creation_time),
    ];
    if fields.iter().all(Value::is_null) {
        return None;
    }
    // All 13 fields: pyamqp reads them by position.
    fields.resize(13, Value::Null);
    Some(Value::described(PROPERTIES, fields))
}

/// Encodes `m` as the payload of a transfer.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let described =
        |code: u64, v: Value| Value::Described(Box::new(Value::Ulong(code)), Box::new(v));
    if !m.message_annotations.is_empty() {
        encode(
            &described(
                MESSAGE_ANNOTATIONS,
                Value::Map(m.message_annotations.clone()),
            ),
            &mut out,
        );
    }
    if let Some(p) = encode_properties(&m.properties) {
        encode(&p, &mut out);
    }
    if !m.application_properties.is_empty() {
        let map = m
            .application_properties
            .iter()
            .map(|(k, v)| (Value::str(k), v.clone()))
            .collect();
        encode(
            &described(APPLICATION_PROPERTIES, Value::Map(map)),
            &mut out,
        );
    }
    match &m.body {
        Body::Data(b) => encode(&described(DATA, Value::Binary(b.clone())), &mut out),
        Body::Value(v) => encode(&described(AMQP_VALUE, v.clone()), &mut out),
        Body::Sequence(items) => encode(
            &described(AMQP_SEQUENCE, Value::List(items.clone())),
            &mut out,
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips() {
        let m = Message {
            message_annotations: vec![(Value::sym("x-opt-offset"), Value::str("42"))],
            properties: Properties {
                message_id: Some(Value::Ulong(7)),
                to: Some("/devices/d1/messages/devicebound".into()),
                content_type: Some("application/json".into()),
                absolute_expiry_time: Some(1_700_000_000_000),
                ..Default::default()
            },
            application_properties: vec![("k".into(), Value::str("v"))],
            body: Body::Data(b"hello".to_vec()),
        };
        let back = decode(&encode_message(&m)).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.body_bytes(), b"hello");
    }

    #[test]
    fn bad_sections_are_errors() {
        assert!(decode(&[0x40]).is_err());
        let mut bad = Vec::new();
        encode(&Value::described(0x74, vec![]), &mut bad);
        assert!(decode(&bad).is_err(), "application properties as a list");
        let mut unknown = Vec::new();
        encode(&Value::described(0x7f, vec![]), &mut unknown);
        assert!(decode(&unknown).is_err());
    }
}
