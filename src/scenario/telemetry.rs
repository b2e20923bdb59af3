//! `telemetry` (top level, and per cohort): what each device sends, with which properties, and
//! when.
//!
//! - `payload`: a JSON template with generators (`{json: ...}`, see [`super::template`]) or raw
//!   bytes of a size (`{size: 4KB}`, `{size: {dist: lognormal, p50: 1KB, p99: 16KB}}`). Without
//!   one, devices send the EZCA IoT sample's message ([`Payload::sample`]).
//! - `properties`: content type and encoding, message and correlation ids, application
//!   properties (templated), carried in the MQTT topic's property bag.
//! - `interval` or `schedule`: when messages are due ([`Schedule`]): fixed, jittered, Poisson,
//!   aligned to the wall clock, in bursts.
//!
//! Sizes use 1 KB = 1024 bytes, as IoT Hub's 4 KB meter does.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::{Location, Spanned};

use super::device::Qos;
use super::template::{Above, FieldRef, Generator, Node, Uniform};
use super::units::Span;

pub use super::schedule::{Jitter, Schedule, Ticks};
pub use super::size::{MAX_MESSAGE_BYTES, SizeModel, parse_bytes};

/// The top-level `telemetry` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Time between two messages of one device: the short form of `schedule: {every: ...}`
    /// (30 s when neither is given).
    #[serde(default)]
    pub interval: Option<Span>,
    /// When messages are due: `{every: 30s}`, with `jitter`, `align` or bursts (`count`,
    /// `spacing`), or `{poisson: 4/h}`.
    #[serde(default)]
    #[schemars(with = "Option<Schedule>")]
    pub schedule: Option<Spanned<Schedule>>,
    /// MQTT QoS of telemetry: 1 (default, at least once) or 0 (at most once).
    #[serde(default)]
    pub qos: Qos,
    /// What each message carries: `{json: template}` or `{size: 4KB}` (default: the EZCA IoT
    /// sample's message).
    #[serde(default)]
    pub payload: Option<Payload>,
    /// The messages' system properties and application properties.
    #[serde(default)]
    pub properties: Option<Properties>,
}

/// `fleet.cohorts[].telemetry`: what a cohort changes; each part left out is the top level's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortTelemetry {
    /// Time between two messages of one device (default: the top level's).
    #[serde(default)]
    pub interval: Option<Span>,
    /// When messages are due (default: the top level's); see `telemetry.schedule`.
    #[serde(default)]
    #[schemars(with = "Option<Schedule>")]
    pub schedule: Option<Spanned<Schedule>>,
    /// MQTT QoS of telemetry, 0 or 1 (default: the top level's).
    #[serde(default)]
    pub qos: Option<Qos>,
    /// What each message carries (default: the top level's).
    #[serde(default)]
    pub payload: Option<Payload>,
    /// The messages' system and application properties (default: the top level's).
    #[serde(default)]
    pub properties: Option<Properties>,
}

/// What the devices of one cohort send, resolved: the top level with the cohort's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    pub schedule: Schedule,
    pub qos: Qos,
    pub payload: Payload,
    /// In the order they go into the property bag: system properties (`$.ct`, `$.ce`, `$.mid`,
    /// `$.cid`) first, then the application's.
    pub properties: Vec<Property>,
}

/// One property of every message: a name and a (templated) scalar value.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// `$.ct`, `$.ce`, `$.mid`, `$.cid`, or an application property's name.
    pub name: String,
    pub value: Node,
    /// Where it was written (unknown for defaults).
    pub at: Location,
}

impl Property {
    fn constant(name: &str, value: &str) -> Self {
        Self {
            name: name.into(),
            value: Node::String(value.into()),
            at: Location::UNKNOWN,
        }
    }
}

/// `payload`: a JSON template, or raw bytes of a size.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Node),
    Raw(SizeModel),
}

impl Payload {
    /// The EZCA IoT sample's message (`SimulateIoTHubDevice`): `deviceId`, `messageId` (from
    /// 0), `temperature` uniform in [20, 35) and `humidity` in [60, 80), two decimals.
    pub fn sample() -> Self {
        let uniform = |min, max| {
            Node::Gen(Generator::Uniform(Uniform {
                min,
                max,
                decimals: Some(2),
            }))
        };
        Payload::Json(Node::Object(vec![
            ("deviceId".into(), Node::Gen(Generator::DeviceId)),
            (
                "messageId".into(),
                Node::Gen(Generator::Counter(super::template::Counter {
                    start: 0,
                    step: 1,
                })),
            ),
            ("temperature".into(), uniform(20.0, 35.0)),
            ("humidity".into(), uniform(60.0, 80.0)),
        ]))
    }

    /// The sample's properties: JSON in UTF-8, and `temperatureAlert` = whether the
    /// temperature is above 30.
    fn sample_properties() -> Vec<Property> {
        let mut props = Self::json_defaults();
        props.push(Property {
            name: "temperatureAlert".into(),
            value: Node::Gen(Generator::Above(Above {
                field: FieldRef {
                    path: "temperature".into(),
                    at: Location::UNKNOWN,
                },
                threshold: 30.0,
            })),
            at: Location::UNKNOWN,
        });
        props
    }

    fn json_defaults() -> Vec<Property> {
        vec![
            Property::constant("$.ct", "application/json"),
            Property::constant("$.ce", "utf-8"),
        ]
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PayloadFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<SizeModel>,
}

impl JsonSchema for Payload {
    fn schema_name() -> Cow<'static, str> {
        "Payload".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What each message carries: a JSON template ({json: …}) or raw bytes \
                            of a size ({size: 4KB}), one of the two.",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"json": {
                        "allOf": [generator.subschema_for::<Node>()],
                        "description": "A JSON template: constants and generators.",
                    }},
                    "required": ["json"],
                    "additionalProperties": false,
                },
                {
                    "type": "object",
                    "properties": {"size": {
                        "allOf": [generator.subschema_for::<SizeModel>()],
                        "description": "Raw bytes of this size (fixed or log-normal).",
                    }},
                    "required": ["size"],
                    "additionalProperties": false,
                },
            ],
        })
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match PayloadFields::deserialize(d)? {
            PayloadFields {
                json: Some(j),
                size: None,
            } => Ok(Payload::Json(j)),
            PayloadFields {
                json: None,
                size: Some(s),
            } => Ok(Payload::Raw(s)),
            _ => Err(de::Error::custom(
                "payload takes json (a template) or size (raw bytes), one of the two",
            )),
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = match self {
            Payload::Json(j) => PayloadFields {
                json: Some(j.clone()),
                size: None,
            },
            Payload::Raw(m) => PayloadFields {
                json: None,
                size: Some(*m),
            },
        };
        fields.serialize(s)
    }
}

/// `properties`: the message's system properties and its application properties.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// `$.ct` (default `application/json` for JSON payloads; `""` sends none).
    #[serde(default)]
    pub content_type: Option<String>,
    /// `$.ce` (default `utf-8` for JSON payloads; `""` sends none).
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// `$.mid`, e.g. `$uuid`.
    #[serde(default)]
    #[schemars(with = "Option<Node>")]
    pub message_id: Option<Spanned<Node>>,
    /// `$.cid`.
    #[serde(default)]
    #[schemars(with = "Option<Node>")]
    pub correlation_id: Option<Spanned<Node>>,
    /// Application properties, in order; values are templates yielding scalars.
    #[serde(default)]
    pub application: Application,
}

/// An ordered mapping of application property names to templated values.
#[derive(Debug, Clone, Default)]
pub struct Application(pub Vec<(String, Spanned<Node>)>);

impl JsonSchema for Application {
    fn schema_name() -> Cow<'static, str> {
        "ApplicationProperties".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Application properties by name, in order; each value is a template \
                            that yields a scalar (such as $device.id or a constant).",
            "type": "object",
            "additionalProperties": generator.subschema_for::<Node>(),
        })
    }
}

impl<'de> Deserialize<'de> for Application {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Application;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of property names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Application, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value()?));
                }
                Ok(Application(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Application {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, &v.value)?;
        }
        m.end()
    }
}

impl Properties {
    /// The property list for messages with `payload`.
    fn resolve(&self, payload: &Payload) -> Vec<Property> {
        let json = matches!(payload, Payload::Json(_));
        let mut out = Vec::new();
        // An empty value sends none (as an SDK message without a content type).
        let fixed = |name: &str, value: &Option<String>, default: &str| {
            value
                .clone()
                .or_else(|| json.then(|| default.to_string()))
                .filter(|v| !v.is_empty())
                .map(|v| Property::constant(name, &v))
        };
        out.extend(fixed("$.ct", &self.content_type, "application/json"));
        out.extend(fixed("$.ce", &self.content_encoding, "utf-8"));
        for (name, value) in [("$.mid", &self.message_id), ("$.cid", &self.correlation_id)] {
            if let Some(v) = value {
                out.push(Property {
                    name: name.into(),
                    value: v.value.clone(),
                    at: v.referenced,
                });
            }
        }
        for (name, value) in &self.application.0 {
            out.push(Property {
                name: name.clone(),
                value: value.value.clone(),
                at: value.referenced,
            });
        }
        out
    }
}

impl Telemetry {
    /// The settings of devices without a cohort of their own.
    pub fn settings(&self) -> TelemetrySettings {
        self.for_cohort(&CohortTelemetry::default())
    }

    /// The settings of a cohort's devices: what the cohort says, else the top level's.
    pub fn for_cohort(&self, c: &CohortTelemetry) -> TelemetrySettings {
        let schedule = match (c, self) {
            (
                CohortTelemetry {
                    schedule: Some(s), ..
                },
                _,
            ) => s.value,
            (
                CohortTelemetry {
                    interval: Some(i), ..
                },
                _,
            ) => Schedule::every(i.0),
            (
                _,
                Telemetry {
                    schedule: Some(s), ..
                },
            ) => s.value,
            (
                _,
                Telemetry {
                    interval: Some(i), ..
                },
            ) => Schedule::every(i.0),
            _ => Schedule::every(Duration::from_secs(30)),
        };
        let payload = c.payload.as_ref().or(self.payload.as_ref());
        let properties = c.properties.as_ref().or(self.properties.as_ref());
        let (payload, properties) = match (payload, properties) {
            (None, None) => (Payload::sample(), Payload::sample_properties()),
            (None, Some(p)) => (Payload::sample(), p.resolve(&Payload::sample())),
            (Some(payload), Some(p)) => (payload.clone(), p.resolve(payload)),
            (Some(payload), None) => (payload.clone(), Properties::default().resolve(payload)),
        };
        TelemetrySettings {
            schedule,
            qos: c.qos.unwrap_or(self.qos),
            payload,
            properties,
        }
    }
}

/// Checks what the model cannot check field by field: not both `interval` and `schedule`, and
/// the properties and references against the payload. `prefix` names the cohort in messages,
/// `at` locates errors without a place of their own.
pub fn validate(
    top: &Telemetry,
    cohort: Option<&CohortTelemetry>,
    prefix: &str,
    at: Location,
) -> Result<(), (Location, String)> {
    let both = |s: &Option<Spanned<Schedule>>, i: &Option<Span>| match (s, i) {
        (Some(s), Some(_)) => Err((
            s.referenced,
            format!("{prefix}telemetry: give interval or schedule, not both"),
        )),
        _ => Ok(()),
    };
    both(&top.schedule, &top.interval)?;
    let settings = match cohort {
        Some(c) => {
            both(&c.schedule, &c.interval)?;
            top.for_cohort(c)
        }
        None => top.settings(),
    };
    check_properties(&settings, prefix, at)?;
    if let Payload::Json(template) = &settings.payload {
        check_payload_references(template, prefix)?;
    }
    Ok(())
}

/// Property names and values, and what their references point at.
fn check_properties(
    s: &TelemetrySettings,
    prefix: &str,
    at: Location,
) -> Result<(), (Location, String)> {
    for p in &s.properties {
        let here = if p.at == Location::UNKNOWN { at } else { p.at };
        let fail =
            |message: String| Err((here, format!("{prefix}telemetry.properties: {message}")));
        if !p.name.starts_with("$.") {
            if p.name.is_empty() || p.name.starts_with('$') {
                return fail(format!(
                    "application property {:?}: names may not be empty or start with $ (system properties are content_type, content_encoding, message_id, correlation_id)",
                    p.name
                ));
            }
            if p.name.to_ascii_lowercase().starts_with("iothub-") {
                return fail(format!(
                    "application property {:?}: names starting with iothub- are reserved by IoT Hub",
                    p.name
                ));
            }
        }
        if !p.value.is_scalar() {
            return fail(format!(
                "{:?} must be a scalar (a string, number, boolean or a generator of one), not an object or array",
                p.name
            ));
        }
        if let Node::String(v) = &p.value
            && p.name == "$.mid"
            && v.len() > 128
        {
            return fail("message_id is longer than IoT Hub's 128 characters".into());
        }
        let mut result = Ok(());
        p.value.walk(false, &mut |node, _| {
            if result.is_ok()
                && let Some((field, number)) = reference(node)
            {
                result = match &s.payload {
                    Payload::Json(template) => {
                        check_reference(template, field, number, None, prefix, here)
                    }
                    Payload::Raw(_) => Err((
                        here,
                        format!(
                            "{prefix}telemetry.properties: {:?} refers to the payload's field {:?}, but the payload is raw bytes",
                            p.name, field.path
                        ),
                    )),
                };
            }
        });
        result?;
    }
    Ok(())
}

/// The field a `$field` or `$above` names, and whether it must be a number.
fn reference(node: &Node) -> Option<(&FieldRef, bool)> {
    match node {
        Node::Gen(Generator::Field(f)) => Some((f, false)),
        Node::Gen(Generator::Above(a)) => Some((&a.field, true)),
        _ => None,
    }
}

/// `$field` and `$above` inside the payload may only name a field written before them (it is
/// generated first).
fn check_payload_references(template: &Node, prefix: &str) -> Result<(), (Location, String)> {
    let mut result = Ok(());
    let mut position = 0usize;
    template.walk(false, &mut |node, _| {
        let here = position;
        position += 1;
        if result.is_ok()
            && let Some((field, number)) = reference(node)
        {
            result = check_reference(template, field, number, Some(here), prefix, field.at);
        }
    });
    result
}

/// Checks that `field` names a scalar (a number if `number`) of `template`, outside any
/// `$repeat`, and, when `before` is given, at a position (depth first, in document order) before
/// that one.
fn check_reference(
    template: &Node,
    field: &FieldRef,
    number: bool,
    before: Option<usize>,
    prefix: &str,
    at: Location,
) -> Result<(), (Location, String)> {
    let at = if field.at == Location::UNKNOWN {
        at
    } else {
        field.at
    };
    let fail = |m: &str| Err((at, format!("{prefix}telemetry: field {:?} {m}", field.path)));
    let Some(target) = template.at_path(&field.path) else {
        return fail("is not in the payload template");
    };
    if !target.is_scalar() {
        return fail("is an object or array; a reference needs a single value");
    }
    if number && !target.is_number() {
        return fail("is not a number, so $above cannot compare it");
    }
    let (mut position, mut found) = (0usize, None);
    template.walk(false, &mut |node, inside_repeat| {
        if std::ptr::eq(node, target) {
            found = Some((position, inside_repeat));
        }
        position += 1;
    });
    match (found, before) {
        (Some((_, true)), _) => fail("lies inside a $repeat, which has many values"),
        (Some((p, _)), Some(here)) if p >= here => fail(
            "comes after the reference in the template: a reference may only name a field written before it",
        ),
        _ => Ok(()),
    }
}

impl TelemetrySettings {
    /// Messages per second one device sends on average (for planning).
    pub fn messages_per_second(&self) -> f64 {
        self.schedule.messages_per_second()
    }
}

#[cfg(test)]
#[path = "telemetry_tests.rs"]
mod tests;
