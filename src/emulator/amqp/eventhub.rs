//! The Event Hub-compatible face of the event log, as `azure-eventhub` uses it: receiver link
//! addresses `{entity}/ConsumerGroups/{group}/Partitions/{id}`, the `apache.org:selector-filter`
//! start positions, events as AMQP messages with IoT Hub's annotations, and the `$management`
//! READs of `com.microsoft:eventhub` and `com.microsoft:partition`.

use super::eventlog::{Event, EventLog, StartAt};
use crate::amqp::codec::Value;
use crate::amqp::message::{Body, Message, Properties};
use crate::amqp::performatives::source_filter;

pub const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";

/// A partition receiver's address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAddress {
    pub consumer_group: String,
    pub partition: u32,
}

/// Parses `[amqps://host/]{entity}/ConsumerGroups/{cg}/Partitions/{p}` for `entity`.
pub fn parse_partition_address(address: &str, entity: &str) -> Option<PartitionAddress> {
    let path = address
        .split_once("://")
        .map_or(address, |(_, r)| r.split_once('/').map_or("", |(_, p)| p));
    let mut parts = path.trim_matches('/').split('/');
    let (e, cg_kw, cg, p_kw, p) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some()
        || !e.eq_ignore_ascii_case(entity)
        || !cg_kw.eq_ignore_ascii_case("ConsumerGroups")
        || !p_kw.eq_ignore_ascii_case("Partitions")
    {
        return None;
    }
    Some(PartitionAddress {
        consumer_group: cg.to_string(),
        partition: p.parse().ok()?,
    })
}

/// The start position of a receiver from its source's selector filter (none: the beginning).
pub fn start_position(source: &Value) -> Result<StartAt, String> {
    let Some(filter) = source_filter(source).and_then(|f| f.map_get(SELECTOR_FILTER)) else {
        return Ok(StartAt::Beginning);
    };
    let expr = match filter {
        Value::Described(_, inner) => inner.as_text(),
        other => other.as_text(),
    }
    .ok_or("the selector filter is not a string")?;
    parse_selector(expr)
}

/// `amqp.annotation.x-opt-offset > '-1'`, `... x-opt-sequence-number >= '5'`,
/// `... x-opt-enqueued-time > '1700000000000'`.
pub fn parse_selector(expr: &str) -> Result<StartAt, String> {
    let bad = || format!("unsupported selector '{expr}'");
    let rest = expr
        .trim()
        .strip_prefix("amqp.annotation.")
        .ok_or_else(bad)?;
    let (field, rest) = rest.split_once(' ').ok_or_else(bad)?;
    let (op, value) = rest.trim().split_once(' ').ok_or_else(bad)?;
    let inclusive = match op {
        ">" => false,
        ">=" => true,
        _ => return Err(bad()),
    };
    let value = value.trim().trim_matches('\'');
    let number = || value.parse::<i64>().map_err(|_| bad());
    Ok(match field {
        "x-opt-offset" if value == "@latest" => StartAt::Latest,
        "x-opt-offset" if value == "-1" => StartAt::Beginning,
        "x-opt-offset" => StartAt::Offset {
            offset: value.parse().map_err(|_| bad())?,
            inclusive,
        },
        "x-opt-sequence-number" => StartAt::Sequence {
            number: number()?,
            inclusive,
        },
        "x-opt-enqueued-time" => StartAt::EnqueuedTime {
            ms: number()?,
            inclusive,
        },
        _ => return Err(bad()),
    })
}

/// The AMQP message a consumer receives for `e`: IoT Hub's annotations, the device's system
/// properties in the properties section, its application properties, the body as data.
pub fn event_message(e: &Event) -> Message {
    let mut props = Properties::default();
    let mut app = Vec::new();
    for (k, v) in &e.properties {
        match k.as_str() {
            "$.mid" => props.message_id = Some(Value::str(v)),
            "$.cid" => props.correlation_id = Some(Value::str(v)),
            "$.uid" => props.user_id = Some(v.as_bytes().to_vec()),
            "$.ct" => props.content_type = Some(v.clone()),
            "$.ce" => props.content_encoding = Some(v.clone()),
            // Other system properties ($.to, $.exp, $.ctime, …) are not carried to the endpoint.
            k if k.starts_with("$.") => {}
            _ => app.push((k.clone(), Value::str(v))),
        }
    }
    let ann = |k: &str, v: Value| (Value::sym(k), v);
    Message {
        message_annotations: vec![
            ann("iothub-connection-device-id", Value::str(&e.device_id)),
            ann(
                "iothub-connection-auth-method",
                Value::str(
                    r#"{"scope":"device","type":"x509Certificate","issuer":"external","acceptingIpFilterRule":null}"#,
                ),
            ),
            ann("iothub-connection-auth-generation-id", Value::str("1")),
            ann("iothub-enqueuedtime", Value::Timestamp(e.enqueued_ms)),
            ann("iothub-message-source", Value::str("Telemetry")),
            ann("x-opt-sequence-number", Value::Long(e.sequence_number)),
            ann("x-opt-offset", Value::str(&e.offset.to_string())),
            ann("x-opt-enqueued-time", Value::Timestamp(e.enqueued_ms)),
        ],
        properties: props,
        application_properties: app,
        body: Body::Data(e.body.to_vec()),
    }
}

/// Answers a `$management` request: (status, description, body).
pub fn management(log: &EventLog, entity: &str, request: &Message) -> (i32, String, Value) {
    let prop = |k: &str| request.application_property(k).and_then(Value::as_text);
    if prop("operation") != Some("READ") {
        return (400, "only READ is supported".into(), Value::Null);
    }
    if !prop("name").is_some_and(|n| n.eq_ignore_ascii_case(entity)) {
        return (
            404,
            format!("no event hub '{}'", prop("name").unwrap_or_default()),
            Value::Null,
        );
    }
    let s = |k: &str, v: Value| (Value::str(k), v);
    match prop("type") {
        Some("com.microsoft:eventhub") => {
            let ids = (0..log.partition_count())
                .map(|p| Value::str(&p.to_string()))
                .collect();
            let body = Value::Map(vec![
                s("name", Value::str(entity)),
                s("type", Value::str("com.microsoft:eventhub")),
                s("created_at", Value::Timestamp(log.created_ms())),
                s("partition_count", Value::Int(log.partition_count() as i32)),
                s("partition_ids", Value::Array(ids)),
            ]);
            (200, "OK".into(), body)
        }
        Some("com.microsoft:partition") => {
            let Some(info) = prop("partition")
                .and_then(|p| p.parse().ok())
                .and_then(|p: u32| Some((p, log.partition_info(p)?)))
            else {
                return (404, "no such partition".into(), Value::Null);
            };
            let (id, info) = info;
            let body = Value::Map(vec![
                s("name", Value::str(entity)),
                s("type", Value::str("com.microsoft:partition")),
                s("partition", Value::str(&id.to_string())),
                s(
                    "begin_sequence_number",
                    Value::Long(info.begin_sequence_number),
                ),
                s(
                    "last_enqueued_sequence_number",
                    Value::Long(info.last_sequence_number),
                ),
                s("last_enqueued_offset", Value::str(&info.last_offset)),
                s(
                    "last_enqueued_time_utc",
                    Value::Timestamp(info.last_enqueued_ms),
                ),
                s("is_partition_empty", Value::Bool(info.is_empty)),
            ]);
            (200, "OK".into(), body)
        }
        _ => (400, "unknown management type".into(), Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_selectors() {
        let want = PartitionAddress {
            consumer_group: "$Default".into(),
            partition: 3,
        };
        assert_eq!(
            parse_partition_address(
                "amqps://h.azure-devices.net/hub/ConsumerGroups/$Default/Partitions/3",
                "hub"
            ),
            Some(want.clone())
        );
        assert_eq!(
            parse_partition_address("hub/ConsumerGroups/$Default/Partitions/3", "hub"),
            Some(want)
        );
        assert!(
            parse_partition_address("other/ConsumerGroups/$Default/Partitions/3", "hub").is_none()
        );
        assert!(
            parse_partition_address("hub/ConsumerGroups/$Default/Partitions/x", "hub").is_none()
        );

        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '-1'"),
            Ok(StartAt::Beginning)
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '@latest'"),
            Ok(StartAt::Latest)
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset >= '40'"),
            Ok(StartAt::Offset {
                offset: 40,
                inclusive: true
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-sequence-number > '5'"),
            Ok(StartAt::Sequence {
                number: 5,
                inclusive: false
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-enqueued-time > '1700000000000'"),
            Ok(StartAt::EnqueuedTime {
                ms: 1_700_000_000_000,
                inclusive: false
            })
        );
        assert!(parse_selector("amqp.annotation.x-opt-offset < '5'").is_err());
        assert!(parse_selector("drop table").is_err());
    }

    #[test]
    fn events_carry_the_hubs_annotations() {
        let e = Event {
            sequence_number: 4,
            offset: 120,
            enqueued_ms: 1_700_000_000_000,
            device_id: "dev-1".into(),
            properties: vec![
                ("$.ct".into(), "application/json".into()),
                ("alert".into(), "true".into()),
            ],
            body: bytes::Bytes::from_static(b"{}"),
        };
        let m = event_message(&e);
        let ann = |k: &str| {
            m.message_annotations
                .iter()
                .find(|(a, _)| a.as_text() == Some(k))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            ann("iothub-connection-device-id"),
            Some(Value::str("dev-1"))
        );
        assert_eq!(ann("x-opt-offset"), Some(Value::str("120")));
        assert_eq!(ann("x-opt-sequence-number"), Some(Value::Long(4)));
        assert_eq!(
            m.properties.content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(
            m.application_properties,
            vec![("alert".to_string(), Value::str("true"))]
        );
    }
}
