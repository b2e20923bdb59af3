//! The operator's events: direct methods, desired-property patches, registry queries and
//! cloud-to-device messages, fleetsim acting as the cloud through the hub's service API and
//! AMQP endpoint; and which devices each goes to ([`Selection`], [`Targets`]).

use std::fmt;
use std::num::NonZeroU32;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::scenario::units::{Percent, Rate, Span};

/// A direct method the operator invokes on each chosen device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MethodEvent {
    pub name: String,
    /// Any JSON (`null` when absent).
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Selection>,
    /// Or the devices this query returns (`SELECT * FROM devices WHERE …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// How long the hub waits for each device's answer (5 s to 300 s, whole seconds).
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Span,
    /// How long the hub waits for an offline device to connect (up to 300 s; none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Span>,
    /// Invocations started per unit of time (all at once when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

fn default_response_timeout() -> Span {
    Span(std::time::Duration::from_secs(30))
}

/// Desired properties the operator sets on each chosen device, then waits for each device to
/// acknowledge (reading its twin, as an operator would).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredEvent {
    /// Merged into the desired properties (`null` deletes one).
    pub patch: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Selection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Patches sent per unit of time (all at once when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// How long the operator waits for a device's acknowledgement before it counts a timeout.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: Span,
    /// How often the operator reads a patched device's twin to see the acknowledgement.
    #[serde(default = "default_poll")]
    pub poll: Span,
}

fn default_ack_timeout() -> Span {
    Span(std::time::Duration::from_secs(60))
}
fn default_poll() -> Span {
    Span(std::time::Duration::from_secs(1))
}

/// A registry query the operator runs, timed as `registry.query` (all pages).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryEvent {
    /// IoT Hub's query language: `SELECT * FROM devices WHERE …`, `SELECT COUNT() AS n …`.
    pub text: String,
    /// Run again this often until the run ends (once when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Span>,
    /// Items per page (`x-ms-max-item-count`; the hub's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<NonZeroU32>,
}

/// A cloud-to-device message the operator sends to each chosen device, through the hub's AMQP
/// endpoint (`/messages/devicebound`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct C2dEvent {
    /// The body: a string as it is, anything else as JSON. `{deviceId}` and `{messageId}` are
    /// replaced by each message's device and message id.
    #[serde(default)]
    pub body: Value,
    /// Application properties (all text).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Selection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Messages sent per unit of time (as fast as the hub settles them when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// How long each message may wait for its device (the hub's default, one hour, when
    /// absent); a message whose turn comes after it expired is not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Span>,
    /// `iothub-ack`: which delivery feedback the hub records (none, positive, negative, full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
}

impl C2dEvent {
    pub fn targets(&self) -> Targets<'_> {
        Targets {
            devices: self.devices,
            query: self.query.as_deref(),
        }
    }

    /// The body of the message `message_id` to `device_id`.
    pub fn body_for(&self, device_id: &str, message_id: &str) -> Vec<u8> {
        let text = match &self.body {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.replace("{deviceId}", device_id)
            .replace("{messageId}", message_id)
            .into_bytes()
    }

    /// The content type the body has: JSON unless it is a plain string.
    pub fn content_type(&self) -> Option<&'static str> {
        match &self.body {
            Value::Null => None,
            Value::String(_) => Some("text/plain"),
            _ => Some("application/json"),
        }
    }

    /// The application properties as text.
    pub fn property_pairs(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k.clone(), s.clone()),
                other => (k.clone(), other.to_string()),
            })
            .collect()
    }
}

/// Which devices: a share of those started by then, or a number of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection {
    Share(Percent),
    Count(NonZeroU32),
}

impl Selection {
    /// How many of `started` devices: a share rounded up (so a small fleet still gets one), a
    /// count at most all of them.
    pub fn of(self, started: usize) -> usize {
        match self {
            Selection::Share(p) => ((p.fraction() * started as f64).ceil() as usize).min(started),
            Selection::Count(n) => (n.get() as usize).min(started),
        }
    }
}

/// The devices a method or desired event goes to: `devices`, or `query`, exactly one.
pub struct Targets<'a> {
    pub devices: Option<Selection>,
    pub query: Option<&'a str>,
}

impl MethodEvent {
    pub fn targets(&self) -> Targets<'_> {
        Targets {
            devices: self.devices,
            query: self.query.as_deref(),
        }
    }
}

impl DesiredEvent {
    pub fn targets(&self) -> Targets<'_> {
        Targets {
            devices: self.devices,
            query: self.query.as_deref(),
        }
    }
}

fn validate_targets(t: Targets, what: &str) -> Result<(), String> {
    match (t.devices, t.query) {
        (Some(_), Some(_)) => Err(format!("{what}: give devices or query, not both")),
        (None, None) => Err(format!(
            "{what} needs devices (a share such as 50% or a number such as 100) or query (SELECT * FROM devices WHERE …)"
        )),
        (None, Some(q)) => validate_query(q, &format!("{what}.query")),
        (Some(_), None) => Ok(()),
    }
}

/// A query must at least read the devices collection (the hub itself checks the rest).
pub(super) fn validate_query(q: &str, what: &str) -> Result<(), String> {
    let lower = q.trim().to_ascii_lowercase();
    if !lower.starts_with("select ") || !lower.contains(" from devices") {
        return Err(format!(
            "{what} {q:?}: expected IoT Hub's query language, e.g. SELECT * FROM devices WHERE tags.ring = 'canary'"
        ));
    }
    Ok(())
}

pub(super) fn validate_method(m: &MethodEvent) -> Result<(), String> {
    if m.name.trim().is_empty() {
        return Err("method.name is empty".into());
    }
    validate_targets(m.targets(), "method")?;
    let response = m.response_timeout.0.as_secs_f64();
    if !(5.0..=300.0).contains(&response) {
        return Err(format!(
            "method.response_timeout is {response}s: IoT Hub takes 5s to 300s"
        ));
    }
    if let Some(c) = m.connect_timeout
        && c.0.as_secs_f64() > 300.0
    {
        return Err("method.connect_timeout: IoT Hub takes at most 300s".into());
    }
    Ok(())
}

pub(super) fn validate_desired(d: &DesiredEvent) -> Result<(), String> {
    if d.patch.is_empty() {
        return Err("desired.patch is empty".into());
    }
    if let Some(k) = d.patch.keys().find(|k| k.starts_with('$')) {
        return Err(format!("desired.patch: {k} is the hub's to set"));
    }
    validate_targets(d.targets(), "desired")
}

pub(super) fn validate_c2d(c: &C2dEvent) -> Result<(), String> {
    validate_targets(c.targets(), "c2d")?;
    if let Some(ack) = &c.ack
        && !["none", "positive", "negative", "full"].contains(&ack.as_str())
    {
        return Err(format!(
            "c2d.ack {ack:?}: expected none, positive, negative or full"
        ));
    }
    if let Some(k) = c.properties.keys().find(|k| k.starts_with("iothub-")) {
        return Err(format!("c2d.properties: {k} is the hub's to set"));
    }
    // IoT Hub keeps a C2D message at most two days (maxTimeToLiveAsIso8601: P2D).
    if let Some(e) = c.expiry
        && !(e.0.as_secs_f64() > 0.0 && e.0.as_secs() <= 2 * 86_400)
    {
        return Err("c2d.expiry: IoT Hub takes more than 0s and at most 2 days (48h)".into());
    }
    Ok(())
}

impl Serialize for Selection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Selection::Share(p) => p.serialize(s),
            Selection::Count(n) => s.serialize_u32(n.get()),
        }
    }
}

struct SelectionVisitor;

impl Visitor<'_> for SelectionVisitor {
    type Value = Selection;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a share of the devices such as 50%, or a number of devices such as 100")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Selection, E> {
        v.parse::<Percent>().map(Selection::Share).map_err(|_| {
            E::custom(format!(
                "devices {v:?}: expected a share of the devices such as 50%, or a number of devices such as 100"
            ))
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Selection, E> {
        u32::try_from(v)
            .ok()
            .and_then(NonZeroU32::new)
            .map(Selection::Count)
            .ok_or_else(|| E::custom(format!("devices: {v} is not a number of devices from 1")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Selection, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "devices: {v} is not a number of devices from 1"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SelectionVisitor)
    }
}
