//! What each device is: its id (`fleet.id_pattern`), how it reaches the hub (transport and
//! registration), and its telemetry's QoS (what it sends and when is [`super::telemetry`]).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceTransportKind {
    #[default]
    Mqtt,
    Websocket,
}

/// Which MQTT client carries a device's session: rumqttc's (`rumqttc`, the default) or
/// fleetsim's own lean session on rumqttc's packet codec (`lean`: one task per device, buffers
/// held only while a packet needs them). Both speak the same MQTT 3.1.1 to IoT Hub, over TLS or
/// WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TransportImpl {
    #[default]
    Rumqttc,
    Lean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Registration {
    #[default]
    PerDevice,
    Bulk,
}

/// MQTT QoS for telemetry. IoT Hub closes the connection on QoS 2, so only 0 and 1 exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Qos {
    AtMostOnce,
    #[default]
    AtLeastOnce,
}

impl JsonSchema for Qos {
    fn schema_name() -> Cow<'static, str> {
        "Qos".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "MQTT QoS of telemetry: 0 (at most once) or 1 (at least once, the \
                            default); IoT Hub closes the connection on QoS 2.",
            "enum": [0, 1],
        })
    }
}

impl<'de> Deserialize<'de> for Qos {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            n => Err(serde::de::Error::custom(format!(
                "qos {n} is not allowed: expected 0 or 1 (IoT Hub closes the connection on QoS 2)"
            ))),
        }
    }
}

/// A device-id pattern, checked when loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdPattern(String);

impl IdPattern {
    pub(super) fn default_pattern() -> Self {
        IdPattern("sim-{index:06}".into())
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut rest = s;
        let mut has_unique = false;
        let mut literal_len = 0;
        while let Some(open) = rest.find('{') {
            check_literal(&rest[..open])?;
            literal_len += open;
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("id pattern {s:?}: unclosed '{{'"))?;
            let field = &rest[open + 1..open + close];
            match field {
                "uuid" | "index" => {}
                f if f
                    .strip_prefix("index:0")
                    .is_some_and(|w| w.parse::<u8>().is_ok_and(|w| w <= 20)) => {}
                other => {
                    return Err(format!(
                        "id pattern {s:?}: unknown placeholder {{{other}}}; expected {{index}}, {{index:06}} or {{uuid}}"
                    ));
                }
            }
            has_unique = true;
            rest = &rest[open + close + 1..];
        }
        check_literal(rest)?;
        literal_len += rest.len();
        if !has_unique {
            return Err(format!(
                "id pattern {s:?} gives every device the same id: include {{index}}, {{index:06}} or {{uuid}}"
            ));
        }
        if literal_len > 64 {
            return Err(format!(
                "id pattern {s:?}: the fixed text is longer than 64 characters"
            ));
        }
        Ok(IdPattern(s.to_string()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of device `index`; `uuid` is that device's seeded UUID.
    pub fn render(&self, index: u64, uuid: &uuid::Uuid) -> String {
        let mut out = String::with_capacity(self.0.len() + 36);
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').unwrap_or(rest.len() - open);
            let field = &rest[open + 1..close];
            if field == "uuid" {
                out.push_str(&uuid.hyphenated().to_string());
            } else if let Some(width) = field.strip_prefix("index:0") {
                let width: usize = width.parse().unwrap_or(0);
                out.push_str(&format!("{index:0width$}"));
            } else {
                out.push_str(&index.to_string());
            }
            rest = rest.get(close + 1..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }
}

/// Device ids become IoT Hub device ids and DNS SANs: keep the fixed text to what both accept.
fn check_literal(text: &str) -> Result<(), String> {
    match text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._".contains(*c)))
    {
        Some(c) => Err(format!(
            "id pattern: character {c:?} is not allowed; use letters, digits, '-', '.' and '_'"
        )),
        None => Ok(()),
    }
}

impl JsonSchema for IdPattern {
    fn schema_name() -> Cow<'static, str> {
        "IdPattern".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A device-id pattern: letters, digits, '-', '.' and '_' with at least \
                            one of {index}, {index:06} (zero-padded to that width) or {uuid}, \
                            such as sim-{index:06}.",
            "type": "string",
            "pattern": r"^[A-Za-z0-9._-]*(\{(index|uuid|index:0[0-9]{1,2})\}[A-Za-z0-9._-]*)+$",
        })
    }
}

impl<'de> Deserialize<'de> for IdPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IdPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_patterns_render_and_reject() {
        let u = uuid::Uuid::nil();
        assert_eq!(
            IdPattern::parse("sim-{index:06}").unwrap().render(7, &u),
            "sim-000007"
        );
        assert_eq!(IdPattern::parse("d{index}").unwrap().render(12, &u), "d12");
        assert_eq!(
            IdPattern::parse("{uuid}").unwrap().render(1, &u),
            "00000000-0000-0000-0000-000000000000"
        );
        assert!(IdPattern::parse("sim").is_err());
        assert!(IdPattern::parse("sim-{name}").is_err());
        assert!(IdPattern::parse("sim/{index}").is_err());
        assert!(IdPattern::parse("sim-{index").is_err());
    }
}
