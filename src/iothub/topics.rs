//! IoT Hub topic names and property bags (reference §3). Property bags are URL-encoded
//! `key=value&key2=value2`; system properties start with `$.`, which SDKs send as `%24.`.
//! Also how IoT Hub sizes a message ([`message_size`]) and meters it against the daily quota
//! ([`meters`]).
//!
//! The cloud-to-device side too: the topic filters a device may subscribe to ([`Subscription`]),
//! the twin and method topics it publishes to, and what a message the hub sends it is
//! ([`parse_cloud_message`]).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::sas::push_url_encoded;

/// The daily quota's meter on every tier but Free: messages count in 4 KB chunks.
pub const METER_BYTES: u64 = 4096;

/// `devices/{id}/messages/events/{property_bag}`.
pub fn telemetry(device_id: &str, properties: &[(&str, &str)]) -> String {
    let mut topic = format!("devices/{device_id}/messages/events/");
    topic.push_str(&property_bag(properties));
    topic
}

/// Encodes properties; keys starting with `$.` become `%24.` as the SDKs send them.
pub fn property_bag(properties: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in properties {
        push_property(&mut out, k, v);
    }
    out
}

/// Appends one `key=value` to the property bag `bag` (after a `&` unless it is the first).
pub fn push_property(bag: &mut String, key: &str, value: &str) {
    push_key(bag, key);
    bag.push('=');
    push_url_encoded(bag, value);
}

/// Appends `key` (with `&` unless it is the first) as [`push_property`] does.
pub fn push_key(bag: &mut String, key: &str) {
    if !bag.is_empty() && !bag.ends_with('/') {
        bag.push('&');
    }
    match key.strip_prefix("$.") {
        Some(system) => {
            bag.push_str("%24.");
            push_url_encoded(bag, system);
        }
        None => push_url_encoded(bag, key),
    }
}

/// A message's size as IoT Hub measures it: the body, plus the values of the system properties
/// (`$.` keys), plus the names and values of the application properties (decoded).
pub fn message_size<K: AsRef<str>, V: AsRef<str>>(body_len: usize, properties: &[(K, V)]) -> u64 {
    let props: usize = properties
        .iter()
        .map(|(k, v)| {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k.starts_with("$.") {
                true => v.len(),
                false => k.len() + v.len(),
            }
        })
        .sum();
    (body_len + props) as u64
}

/// How many meters of `meter_bytes` a message of `size` bytes counts for: at least one.
pub fn meters(size: u64, meter_bytes: u64) -> u64 {
    size.div_ceil(meter_bytes.max(1)).max(1)
}

/// Decodes a property bag; `%24.` and `$.` both come back as `$.`. A key without `=` has an empty
/// value. Returns `None` when an escape is not valid UTF-8.
pub fn parse_property_bag(bag: &str) -> Option<Vec<(String, String)>> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The application property fleetsim's C2D sender stamps its send time in: Unix epoch
/// milliseconds as a decimal string. A fleetsim device that receives it records `c2d.delivery`.
pub const C2D_SENT_AT: &str = "fleetsim-sent-at";

/// What IoT Hub leaves unescaped in a C2D property bag: RFC 3986's unreserved characters (as
/// Python's `quote(…, safe="")`, which the reference cites).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `devices/{id}/messages/devicebound/{property_bag}`, as IoT Hub delivers a cloud-to-device
/// message: keys and values percent-encoded, `$.` of system properties as `%24.`, and a value
/// rendered `key` (none), `key=` (empty) or `key=value`.
pub fn c2d_delivery(device_id: &str, properties: &[(&str, Option<&str>)]) -> String {
    let mut topic = format!("devices/{device_id}/messages/devicebound/");
    for (i, (k, v)) in properties.iter().enumerate() {
        if i > 0 {
            topic.push('&');
        }
        match k.strip_prefix("$.") {
            Some(system) => {
                topic.push_str("%24.");
                topic.extend(utf8_percent_encode(system, UNRESERVED));
            }
            None => topic.extend(utf8_percent_encode(k, UNRESERVED)),
        }
        if let Some(v) = v {
            topic.push('=');
            topic.extend(utf8_percent_encode(v, UNRESERVED));
        }
    }
    topic
}

/// Decodes a C2D property bag, keeping `key` (`None`) apart from `key=` (`Some("")`); `%24.`
/// and `$.` both come back as `$.`. `None` when an escape is not valid UTF-8 or a key is empty.
pub fn parse_c2d_properties(bag: &str) -> Option<Vec<(String, Option<String>)>> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (pair, None),
            };
            let key = decode(k).filter(|k| !k.is_empty())?;
            let value = match v {
                Some(v) => Some(decode(v)?),
                None => None,
            };
            Some((key, value))
        })
        .collect()
}

/// If `topic` is telemetry from `device_id`, its decoded properties.
pub fn parse_telemetry(topic: &str, device_id: &str) -> Option<Vec<(String, String)>> {
    let rest = topic.strip_prefix("devices/")?.strip_prefix(device_id)?;
    let bag = rest.strip_prefix("/messages/events/").or_else(|| {
        // The trailing slash is optional when there is no property bag.
        (rest == "/messages/events").then_some("")
    })?;
    parse_property_bag(bag)
}

/// The topic filters IoT Hub lets a device subscribe to (reference §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subscription {
    /// Direct-method requests: `$iothub/methods/POST/#`.
    Methods,
    /// Desired-property changes: `$iothub/twin/PATCH/properties/desired/#`.
    Desired,
    /// Answers to the device's twin requests: `$iothub/twin/res/#`.
    Twin,
    /// Cloud-to-device messages: `devices/{id}/messages/devicebound/#`.
    C2d,
}

impl Subscription {
    /// The topic filter, for device `device_id`.
    pub fn filter(self, device_id: &str) -> String {
        match self {
            Subscription::Methods => "$iothub/methods/POST/#".into(),
            Subscription::Desired => "$iothub/twin/PATCH/properties/desired/#".into(),
            Subscription::Twin => "$iothub/twin/res/#".into(),
            Subscription::C2d => format!("devices/{device_id}/messages/devicebound/#"),
        }
    }

    /// The QoS the SDKs subscribe with: 1 for cloud-to-device messages, 0 for the rest.
    pub fn at_least_once(self) -> bool {
        self == Subscription::C2d
    }
}

/// `$iothub/twin/GET/?$rid={rid}` (empty body).
pub fn twin_get(rid: u64) -> String {
    format!("$iothub/twin/GET/?$rid={rid}")
}

/// `$iothub/twin/PATCH/properties/reported/?$rid={rid}` (the patch as the body).
pub fn twin_patch_reported(rid: u64) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}")
}

/// `$iothub/methods/res/{status}/?$rid={rid}` (the answer's payload as the body).
pub fn method_response(status: i64, rid: &str) -> String {
    format!("$iothub/methods/res/{status}/?$rid={rid}")
}

/// What a message the hub sends a device is, from its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudMessage {
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version=N]`: the answer to a twin request.
    TwinResponse {
        status: u16,
        rid: String,
        version: Option<u64>,
    },
    /// `$iothub/twin/PATCH/properties/desired/?$version=N`: desired properties changed.
    DesiredPatch { version: Option<u64> },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`: a direct method to answer.
    MethodRequest { name: String, rid: String },
    /// `devices/{id}/messages/devicebound/{property_bag}`: a cloud-to-device message, its
    /// properties decoded (`None`: a property without a value).
    C2d {
        properties: Vec<(String, Option<String>)>,
    },
}

/// The `$rid`, `$version`, ... of a topic's query part (`?a=1&b=2`), URL-decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    parse_property_bag(query)?
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// What `topic`, received by device `device_id`, is; `None` for a topic no IoT Hub feature sends
/// (or one it sends malformed: a twin answer or method request without a `$rid`).
pub fn parse_cloud_message(topic: &str, device_id: &str) -> Option<CloudMessage> {
    if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
        let (status, query) = rest.split_once("/?")?;
        return Some(CloudMessage::TwinResponse {
            status: status.parse().ok()?,
            rid: query_value(query, "$rid").filter(|r| !r.is_empty())?,
            version: query_value(query, "$version").and_then(|v| v.parse().ok()),
        });
    }
    if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/") {
        let query = query.strip_prefix('?').unwrap_or(query);
        return Some(CloudMessage::DesiredPatch {
            version: query_value(query, "$version").and_then(|v| v.parse().ok()),
        });
    }
    if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
        let (name, query) = rest.split_once("/?")?;
        return Some(CloudMessage::MethodRequest {
            name: percent_decode_str(name).decode_utf8().ok()?.into_owned(),
            rid: query_value(query, "$rid").filter(|r| !r.is_empty())?,
        });
    }
    let bag = topic
        .strip_prefix("devices/")?
        .strip_prefix(device_id)?
        .strip_prefix("/messages/devicebound/")?;
    Some(CloudMessage::C2d {
        properties: parse_c2d_properties(bag)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_messages_are_told_apart_by_topic() {
        use CloudMessage::*;
        assert_eq!(
            parse_cloud_message("$iothub/twin/res/204/?$rid=7&$version=12", "d"),
            Some(TwinResponse {
                status: 204,
                rid: "7".into(),
                version: Some(12)
            })
        );
        assert_eq!(
            parse_cloud_message("$iothub/twin/res/200/?$rid=1", "d"),
            Some(TwinResponse {
                status: 200,
                rid: "1".into(),
                version: None
            })
        );
        assert_eq!(
            parse_cloud_message("$iothub/twin/PATCH/properties/desired/?$version=3", "d"),
            Some(DesiredPatch { version: Some(3) })
        );
        assert_eq!(
            parse_cloud_message("$iothub/methods/POST/reboot/?$rid=ab1", "d"),
            Some(MethodRequest {
                name: "reboot".into(),
                rid: "ab1".into()
            })
        );
        assert_eq!(
            parse_cloud_message("devices/d/messages/devicebound/%24.mid=1&k=v", "d"),
            Some(C2d {
                properties: vec![
                    ("$.mid".into(), Some("1".into())),
                    ("k".into(), Some("v".into()))
                ]
            })
        );
        for bad in [
            "$iothub/twin/res/abc/?$rid=1",
            "$iothub/twin/res/200/?$version=1",
            "$iothub/methods/POST/reboot/?$rid=",
            "$iothub/methods/POST/reboot",
            "devices/other/messages/devicebound/",
            "elsewhere",
        ] {
            assert_eq!(parse_cloud_message(bad, "d"), None, "{bad}");
        }
        assert_eq!(
            Subscription::C2d.filter("d"),
            "devices/d/messages/devicebound/#"
        );
        assert_eq!(method_response(200, "x"), "$iothub/methods/res/200/?$rid=x");
    }

    #[test]
    fn c2d_property_bags_round_trip_as_iot_hub_writes_them() {
        let props = [
            ("$.mid", Some("2c2d/1")),
            ("$.to", Some("/devices/d 1/messages/devicebound")),
            ("flag", None),
            ("empty", Some("")),
            ("a&b=c", Some("x+y%z é")),
        ];
        let topic = c2d_delivery("d1", &props);
        assert_eq!(
            topic,
            "devices/d1/messages/devicebound/%24.mid=2c2d%2F1\
             &%24.to=%2Fdevices%2Fd%201%2Fmessages%2Fdevicebound&flag&empty=\
             &a%26b%3Dc=x%2By%25z%20%C3%A9"
        );
        let bag = topic
            .strip_prefix("devices/d1/messages/devicebound/")
            .unwrap();
        let parsed = parse_c2d_properties(bag).unwrap();
        let want: Vec<(String, Option<String>)> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        assert_eq!(parsed, want);
        assert_eq!(parse_c2d_properties("").unwrap(), vec![]);
        assert_eq!(parse_c2d_properties("k=%FF"), None, "not UTF-8");
        assert_eq!(parse_c2d_properties("=v"), None, "no key");
        assert_eq!(
            parse_cloud_message("devices/d1/messages/devicebound/", "d1"),
            Some(CloudMessage::C2d { properties: vec![] })
        );
    }

    #[test]
    fn telemetry_topic_encodes_and_parses_back() {
        let t = telemetry(
            "sim-1",
            &[
                ("$.ct", "application/json;charset=utf-8"),
                ("temperatureAlert", "true"),
            ],
        );
        assert_eq!(
            t,
            "devices/sim-1/messages/events/%24.ct=application%2Fjson%3Bcharset%3Dutf-8&temperatureAlert=true"
        );
        let props = parse_telemetry(&t, "sim-1").unwrap();
        assert_eq!(
            props[0],
            ("$.ct".into(), "application/json;charset=utf-8".into())
        );
        assert_eq!(props[1], ("temperatureAlert".into(), "true".into()));
        assert!(parse_telemetry(&t, "sim-2").is_none());
        assert!(
            parse_telemetry("devices/sim-1/messages/events", "sim-1")
                .unwrap()
                .is_empty()
        );
        assert!(parse_telemetry("devices/sim-1/messages/eventsX", "sim-1").is_none());
    }

    #[test]
    fn size_counts_system_values_and_application_names_and_values() {
        let props = [("$.ct", "application/json"), ("alert", "true")];
        assert_eq!(message_size(100, &props), 100 + 16 + 5 + 4);
        assert_eq!(meters(0, METER_BYTES), 1);
        assert_eq!(meters(4096, METER_BYTES), 1);
        assert_eq!(meters(4097, METER_BYTES), 2);
        assert_eq!(meters(16 * 1024, METER_BYTES), 4);
        assert_eq!(meters(600, 512), 2);
    }
}
