//! The service API's JSON, with IoT Hub's names (reference §3 and `dps-and-c2d.md`): the device
//! twin ([`Twin`]), a direct method's request and answer ([`MethodCall`], [`MethodResponse`]),
//! the statistics and a page of query results.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A device twin as `GET /twins/{id}` (and a query's `SELECT *`) returns it. Members this model
/// does not name are kept in `other`, so a twin read and written back (`PUT`) loses nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    #[serde(default)]
    pub device_id: String,
    /// The twin's etag (unquoted), for `If-Match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The twin's version (every change bumps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `enabled` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `Connected` or `Disconnected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    #[serde(default)]
    pub properties: TwinProperties,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The twin's two property sections, each with its `$version` (and `$metadata`) inside.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TwinProperties {
    #[serde(default)]
    pub desired: Map<String, Value>,
    #[serde(default)]
    pub reported: Map<String, Value>,
}

impl Twin {
    /// The desired section's `$version`.
    pub fn desired_version(&self) -> Option<u64> {
        self.properties.desired.get("$version")?.as_u64()
    }

    /// The reported section's `$version`.
    pub fn reported_version(&self) -> Option<u64> {
        self.properties.reported.get("$version")?.as_u64()
    }

    /// Whether the device has acknowledged desired property `name` at `version` or later, the
    /// IoT Plug and Play way: reported `{name: {"value": …, "ac": 2xx, "av": version}}`.
    pub fn acknowledged(&self, name: &str, version: u64) -> bool {
        let Some(ack) = self.properties.reported.get(name) else {
            return false;
        };
        let code = ack.get("ac").and_then(Value::as_u64).unwrap_or(0);
        let at = ack.get("av").and_then(Value::as_u64).unwrap_or(0);
        (200..300).contains(&code) && at >= version
    }
}

/// `POST /twins/{id}/methods`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MethodCall {
    pub method_name: String,
    /// Any JSON; `null` for none.
    #[serde(default)]
    pub payload: Value,
    /// How long the hub waits for the device's answer (5–300 s; IoT Hub's default 30).
    pub response_timeout_in_seconds: u64,
    /// How long the hub waits for an offline device to connect (0–300 s; default 0).
    pub connect_timeout_in_seconds: u64,
}

impl MethodCall {
    /// Method `name` with `payload` and IoT Hub's default timeouts (30 s, 0 s).
    pub fn new(name: &str, payload: Value) -> Self {
        Self {
            method_name: name.into(),
            payload,
            response_timeout_in_seconds: 30,
            connect_timeout_in_seconds: 0,
        }
    }
}

/// The device's answer to a method, as the hub relays it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MethodResponse {
    /// The status the device answered with (any integer; 200 by convention for success).
    pub status: i64,
    #[serde(default)]
    pub payload: Value,
}

/// `GET /statistics/service`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatistics {
    pub connected_device_count: u64,
}

/// `GET /statistics/devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatistics {
    pub total_device_count: u64,
    pub enabled_device_count: u64,
    pub disabled_device_count: u64,
}

/// One page of a query's results: twins for `SELECT *`, `{"n": …}` rows for `SELECT COUNT() AS
/// n`, and the token of the next page, if there is one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryPage {
    pub items: Vec<Value>,
    pub continuation: Option<String>,
}

/// A query's result, all pages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub items: Vec<Value>,
    pub pages: u32,
}

impl QueryResult {
    /// The number a `SELECT COUNT() AS …` query returned (its one row's one number); `None` for
    /// other queries.
    pub fn count(&self) -> Option<u64> {
        match self.items.as_slice() {
            [Value::Object(row)] if row.len() == 1 => row.values().next()?.as_u64(),
            _ => None,
        }
    }

    /// The `deviceId`s of the rows that have one (twins from `SELECT *`).
    pub fn device_ids(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|v| v.get("deviceId")?.as_str().map(str::to_string))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twin_reads_back_whole_and_knows_its_acknowledgements() {
        let text = r#"{"deviceId":"d1","etag":"AAAAAAAAAAE=","deviceEtag":"x","status":"enabled",
            "version":4,"connectionState":"Connected","tags":{"ring":"canary"},
            "properties":{"desired":{"telemetryInterval":5,"$version":3,"$metadata":{}},
            "reported":{"telemetryInterval":{"value":5,"ac":200,"av":3},"$version":7}},
            "capabilities":{"iotEdge":false}}"#;
        let twin: Twin = serde_json::from_str(text).unwrap();
        assert_eq!(twin.desired_version(), Some(3));
        assert_eq!(twin.reported_version(), Some(7));
        assert!(twin.acknowledged("telemetryInterval", 3));
        assert!(!twin.acknowledged("telemetryInterval", 4));
        assert!(!twin.acknowledged("other", 1));
        assert_eq!(twin.other["deviceEtag"], "x");
        let back: Value = serde_json::to_value(&twin).unwrap();
        assert_eq!(back["capabilities"]["iotEdge"], false);
        assert_eq!(back["connectionState"], "Connected");
    }

    #[test]
    fn query_results_give_counts_and_ids() {
        let count = QueryResult {
            items: vec![serde_json::json!({"n": 42})],
            pages: 1,
        };
        assert_eq!(count.count(), Some(42));
        let twins = QueryResult {
            items: vec![
                serde_json::json!({"deviceId": "a"}),
                serde_json::json!({"deviceId": "b"}),
            ],
            pages: 2,
        };
        assert_eq!(twins.count(), None);
        assert_eq!(twins.device_ids(), vec!["a", "b"]);
        let call = serde_json::to_value(MethodCall::new("reboot", Value::Null)).unwrap();
        assert_eq!(call["methodName"], "reboot");
        assert_eq!(call["responseTimeoutInSeconds"], 30);
        assert_eq!(call["connectTimeoutInSeconds"], 0);
    }
}
