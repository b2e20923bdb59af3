//! Device twins over MQTT (reference §3): `GET` answers the whole twin, a reported-properties
//! `PATCH` merges (a `null` deletes a member) and bumps the reported version. Answers go to
//! `$iothub/twin/res/{status}/?$rid={rid}[&$version=N]`.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// One device's twin.
#[derive(Debug, Clone, Default)]
pub struct Twin {
    pub desired: Map<String, Value>,
    pub desired_version: u64,
    pub reported: Map<String, Value>,
    pub reported_version: u64,
}

impl Twin {
    fn document(&self) -> Value {
        let mut desired = self.desired.clone();
        desired.insert("$version".into(), self.desired_version.into());
        let mut reported = self.reported.clone();
        reported.insert("$version".into(), self.reported_version.into());
        serde_json::json!({ "desired": desired, "reported": reported })
    }
}

/// What a twin request asks for.
enum Request<'a> {
    Get { rid: &'a str },
    PatchReported { rid: &'a str },
}

fn rid(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("$rid="))
        .filter(|r| !r.is_empty())
}

fn parse(topic: &str) -> Option<Request<'_>> {
    if let Some(q) = topic.strip_prefix("$iothub/twin/GET/?") {
        return Some(Request::Get { rid: rid(q)? });
    }
    if let Some(q) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
        return Some(Request::PatchReported { rid: rid(q)? });
    }
    None
}

/// Handles a twin publish from `device`: `None` if the topic is not a twin request (the caller
/// closes the connection), else the response topic and body.
pub fn handle(
    twins: &mut HashMap<String, Twin>,
    device: &str,
    topic: &str,
    payload: &[u8],
) -> Option<(String, Vec<u8>)> {
    let twin = twins.entry(device.to_string()).or_default();
    Some(match parse(topic)? {
        Request::Get { rid } => (
            format!("$iothub/twin/res/200/?$rid={rid}"),
            twin.document().to_string().into_bytes(),
        ),
        Request::PatchReported { rid } => match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(patch)) => {
                merge(&mut twin.reported, patch);
                twin.reported_version += 1;
                (
                    format!(
                        "$iothub/twin/res/204/?$rid={rid}&$version={}",
                        twin.reported_version
                    ),
                    Vec::new(),
                )
            }
            _ => (format!("$iothub/twin/res/400/?$rid={rid}"), Vec::new()),
        },
    })
}

/// JSON merge patch: objects merge recursively, `null` removes.
fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(&k);
            }
            Value::Object(inner) => {
                let slot = target.entry(k).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(m) = slot {
                    merge(m, inner);
                }
            }
            other => {
                target.insert(k, other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_and_patch_reported() {
        let mut twins = HashMap::new();
        let (topic, body) = handle(&mut twins, "d", "$iothub/twin/GET/?$rid=1", b"").unwrap();
        assert_eq!(topic, "$iothub/twin/res/200/?$rid=1");
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["reported"]["$version"], 0);

        let patch = br#"{"fw":"1.2","net":{"rssi":-60,"ssid":"x"}}"#;
        let (topic, _) = handle(
            &mut twins,
            "d",
            "$iothub/twin/PATCH/properties/reported/?$rid=2",
            patch,
        )
        .unwrap();
        assert_eq!(topic, "$iothub/twin/res/204/?$rid=2&$version=1");
        handle(
            &mut twins,
            "d",
            "$iothub/twin/PATCH/properties/reported/?$rid=3",
            br#"{"net":{"ssid":null}}"#,
        )
        .unwrap();
        let (_, body) = handle(&mut twins, "d", "$iothub/twin/GET/?$rid=4", b"").unwrap();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["reported"]["fw"], "1.2");
        assert_eq!(doc["reported"]["net"], serde_json::json!({"rssi": -60}));
        assert_eq!(doc["reported"]["$version"], 2);

        let (topic, _) = handle(
            &mut twins,
            "d",
            "$iothub/twin/PATCH/properties/reported/?$rid=5",
            b"not json",
        )
        .unwrap();
        assert_eq!(topic, "$iothub/twin/res/400/?$rid=5");
        assert!(
            handle(&mut twins, "d", "$iothub/twin/GET/", b"").is_none(),
            "a request needs a $rid"
        );
        assert!(handle(&mut twins, "d", "$iothub/twin/DELETE/?$rid=1", b"").is_none());
    }
}
