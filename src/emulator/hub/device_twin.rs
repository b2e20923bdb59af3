//! The device's side of its twin over MQTT (reference §3): `$iothub/twin/GET/?$rid={rid}` answers
//! the whole twin (200), `$iothub/twin/PATCH/properties/reported/?$rid={rid}` merges a reported
//! patch (204 with the new `$version`; 400 for a body that is not a JSON object or breaks the
//! key rules; 413 over 32 KB). Answers go to `$iothub/twin/res/{status}/?$rid={rid}[&$version=N]`;
//! a throttled request gets status 429 there. The desired-properties notification a service
//! change sends is [`desired_notification`].

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::twin::{Twin, TwinError};

/// What a twin request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request<'a> {
    Get { rid: &'a str },
    PatchReported { rid: &'a str },
}

impl<'a> Request<'a> {
    pub(super) fn rid(self) -> &'a str {
        match self {
            Request::Get { rid } | Request::PatchReported { rid } => rid,
        }
    }
}

/// How a twin request ended, for the hub's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Read,
    Updated,
    InvalidJson,
    Refused(TwinError),
}

fn rid(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("$rid="))
        .filter(|r| !r.is_empty())
}

/// The twin request a device published on `topic`; `None` if it is not one (IoT Hub closes the
/// connection then).
pub(super) fn parse(topic: &str) -> Option<Request<'_>> {
    if let Some(q) = topic.strip_prefix("$iothub/twin/GET/?") {
        return Some(Request::Get { rid: rid(q)? });
    }
    if let Some(q) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
        return Some(Request::PatchReported { rid: rid(q)? });
    }
    None
}

/// The response topic for `status`.
pub(super) fn response_topic(status: u16, rid: &str) -> String {
    format!("$iothub/twin/res/{status}/?$rid={rid}")
}

/// Answers `request` from `device` on the twin store: the response topic and body, and what
/// happened.
pub(super) fn answer(
    twins: &mut HashMap<String, Twin>,
    device: &str,
    request: Request<'_>,
    payload: &[u8],
) -> (String, Vec<u8>, Outcome) {
    let twin = twins.entry(device.to_string()).or_default();
    match request {
        Request::Get { rid } => (
            response_topic(200, rid),
            twin.device_document().to_string().into_bytes(),
            Outcome::Read,
        ),
        Request::PatchReported { rid } => {
            let patch = match serde_json::from_slice::<Value>(payload) {
                Ok(Value::Object(patch)) => patch,
                _ => return (response_topic(400, rid), Vec::new(), Outcome::InvalidJson),
            };
            match twin.patch_reported(patch) {
                Ok(()) => (
                    format!(
                        "{}&$version={}",
                        response_topic(204, rid),
                        twin.reported_version
                    ),
                    Vec::new(),
                    Outcome::Updated,
                ),
                Err(e) => {
                    let status = match e {
                        TwinError::TooLarge { .. } => 413,
                        _ => 400,
                    };
                    (response_topic(status, rid), Vec::new(), Outcome::Refused(e))
                }
            }
        }
    }
}

/// The notification of a desired-properties change: topic
/// `$iothub/twin/PATCH/properties/desired/?$version=N` and the patch with `$version`.
pub(super) fn desired_notification(
    mut patch: Map<String, Value>,
    version: u64,
) -> (String, Vec<u8>) {
    patch.insert("$version".into(), version.into());
    (
        format!("$iothub/twin/PATCH/properties/desired/?$version={version}"),
        Value::Object(patch).to_string().into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(twins: &mut HashMap<String, Twin>, topic: &str, body: &[u8]) -> (String, Vec<u8>) {
        let request = parse(topic).expect("a twin request");
        let (topic, body, _) = answer(twins, "d", request, body);
        (topic, body)
    }

    #[test]
    fn get_and_patch_reported() {
        let mut twins = HashMap::new();
        let (topic, body) = run(&mut twins, "$iothub/twin/GET/?$rid=1", b"");
        assert_eq!(topic, "$iothub/twin/res/200/?$rid=1");
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["reported"]["$version"], 1);
        assert_eq!(doc["desired"]["$version"], 1);

        let patch = br#"{"fw":"1.2","net":{"rssi":-60,"ssid":"x"}}"#;
        let path = "$iothub/twin/PATCH/properties/reported/?$rid=2";
        let (topic, _) = run(&mut twins, path, patch);
        assert_eq!(topic, "$iothub/twin/res/204/?$rid=2&$version=2");
        let path = "$iothub/twin/PATCH/properties/reported/?$rid=3";
        run(&mut twins, path, br#"{"net":{"ssid":null}}"#);
        let (_, body) = run(&mut twins, "$iothub/twin/GET/?$rid=4", b"");
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["reported"]["fw"], "1.2");
        assert_eq!(doc["reported"]["net"], serde_json::json!({"rssi": -60}));
        assert_eq!(doc["reported"]["$version"], 3);
    }

    #[test]
    fn bad_patches_get_400_or_413() {
        let mut twins = HashMap::new();
        let path = "$iothub/twin/PATCH/properties/reported/?$rid=5";
        for body in [&b"not json"[..], b"[1,2]", b"{\"a.b\":1}", b"{\"$x\":1}"] {
            let (topic, _) = run(&mut twins, path, body);
            assert_eq!(topic, "$iothub/twin/res/400/?$rid=5", "{body:?}");
        }
        let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(33 * 1024));
        let (topic, _) = run(&mut twins, path, big.as_bytes());
        assert_eq!(topic, "$iothub/twin/res/413/?$rid=5");
        assert_eq!(twins["d"].reported_version, 1, "nothing was applied");
    }

    #[test]
    fn only_twin_requests_with_a_rid_parse() {
        assert!(
            parse("$iothub/twin/GET/").is_none(),
            "a request needs a $rid"
        );
        assert!(parse("$iothub/twin/GET/?$rid=").is_none());
        assert!(parse("$iothub/twin/DELETE/?$rid=1").is_none());
        assert_eq!(
            parse("$iothub/twin/GET/?$rid=7&x=1"),
            Some(Request::Get { rid: "7" })
        );
    }

    #[test]
    fn the_desired_notification_carries_the_version() {
        let mut patch = Map::new();
        patch.insert("telemetryInterval".into(), 5.into());
        patch.insert("gone".into(), Value::Null);
        let (topic, body) = desired_notification(patch, 4);
        assert_eq!(topic, "$iothub/twin/PATCH/properties/desired/?$version=4");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"telemetryInterval": 5, "gone": null, "$version": 4})
        );
    }
}
