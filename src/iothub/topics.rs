//! IoT Hub topic names and property bags (reference §3). Property bags are URL-encoded
//! `key=value&key2=value2`; system properties start with `$.`, which SDKs send as `%24.`.

use percent_encoding::percent_decode_str;

use super::sas::url_encode;

/// `devices/{id}/messages/events/{property_bag}`.
pub fn telemetry(device_id: &str, properties: &[(&str, &str)]) -> String {
    let mut topic = format!("devices/{device_id}/messages/events/");
    topic.push_str(&property_bag(properties));
    topic
}

/// Encodes properties; keys starting with `$.` become `%24.` as the SDKs send them.
pub fn property_bag(properties: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in properties.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        match k.strip_prefix("$.") {
            Some(system) => {
                out.push_str("%24.");
                out.push_str(&url_encode(system));
            }
            None => out.push_str(&url_encode(k)),
        }
        out.push('=');
        out.push_str(&url_encode(v));
    }
    out
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
}
