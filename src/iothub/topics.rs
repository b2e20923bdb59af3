//! IoT Hub topic names and property bags (reference §3). Property bags are URL-encoded
//! `key=value&key2=value2`; system properties start with `$.`, which SDKs send as `%24.`.
//! Also how IoT Hub sizes a message ([`message_size`]) and meters it against the daily quota
//! ([`meters`]).

use percent_encoding::percent_decode_str;

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

/// If `topic` is telemetry from `device_id`, its decoded properties.
pub fn parse_telemetry(topic: &str, device_id: &str) -> Option<Vec<(String, String)>> {
    let rest = topic.strip_prefix("devices/")?.strip_prefix(device_id)?;
    let bag = rest.strip_prefix("/messages/events/").or_else(|| {
        // The trailing slash is optional when there is no property bag.
        (rest == "/messages/events").then_some("")
    })?;
    parse_property_bag(bag)
}

#[cfg(test)]
mod tests {
    use super::*;

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
