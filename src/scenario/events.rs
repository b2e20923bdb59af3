//! Timed scenario events, each one of:
//!
//! ```yaml
//! events:
//!   - {at: 20s, revoke: 10%, method: admin}          # revoke certificates (method: self | admin)
//!   - at: 30s                                        # a direct method, fleetsim as the operator
//!     method: {name: reboot, payload: {delay: 0}, devices: 100%, response_timeout: 30s,
//!              connect_timeout: 10s, rate: 200/s}
//!   - at: 40s                                        # desired properties
//!     desired: {patch: {telemetryInterval: 5}, devices: 50%, rate: 100/s}
//!   - at: 5s                                         # a registry query, repeated
//!     query: {text: "SELECT COUNT() AS n FROM devices WHERE connectionState = 'Connected'",
//!             every: 10s}
//!   - at: 50s                                        # a cloud-to-device message
//!     c2d: {body: {command: blink, device: "{deviceId}"}, properties: {kind: command},
//!           devices: 10%, rate: 50/s, expiry: 10m}
//! ```
//!
//! `method` is either how a revocation is made (a word, with `revoke`) or a direct method (a
//! mapping); [`Event::action`] says which of the five an event is once the loader has checked it
//! ([`validate`]). Methods, desired patches and C2D messages go to a share (`devices: 50%`) or a number
//! (`devices: 100`) of the devices started by then, or to those a query returns (`query:
//! "SELECT * FROM devices WHERE …"`).
//!
//! Also here: how a renewed certificate replaces the old connection (`certificate.swap`).

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use serde_saphyr::Location;

use super::units::{Percent, Rate, Span};

/// One thing that happens to the fleet at a point of the run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When, from the first arrival (real time).
    pub at: Span,
    /// Share of the devices started by then (and not yet revoked) whose certificate is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Percent>,
    /// With `revoke`: who revokes (`self` or `admin`); alone: a direct method to invoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodField>,
    /// Desired properties to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredEvent>,
    /// A registry query to run (once, or every so often).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryEvent>,
    /// A cloud-to-device message to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2d: Option<C2dEvent>,
}

/// What an event does (see [`Event::action`]).
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    Revoke {
        share: Percent,
        method: RevokeMethod,
    },
    Method(&'a MethodEvent),
    Desired(&'a DesiredEvent),
    Query(&'a QueryEvent),
    C2d(&'a C2dEvent),
}

impl Event {
    /// What the event does, for an event the loader has checked ([`validate`]); an unchecked
    /// one that names none is read as a query that never runs.
    pub fn action(&self) -> Option<Action<'_>> {
        if let Some(c) = &self.c2d {
            let alone = self.revoke.is_none()
                && self.method.is_none()
                && self.desired.is_none()
                && self.query.is_none();
            return alone.then_some(Action::C2d(c));
        }
        match (&self.revoke, &self.method, &self.desired, &self.query) {
            (Some(share), m, None, None) => Some(Action::Revoke {
                share: *share,
                method: match m {
                    Some(MethodField::Revocation(r)) => *r,
                    _ => RevokeMethod::default(),
                },
            }),
            (None, Some(MethodField::Invoke(m)), None, None) => Some(Action::Method(m)),
            (None, None, Some(d), None) => Some(Action::Desired(d)),
            (None, None, None, Some(q)) => Some(Action::Query(q)),
            _ => None,
        }
    }

    /// Whether fleetsim acts as the operator for it (a direct method, a desired patch, a query,
    /// a C2D message), through the hub's service API or its AMQP endpoint.
    pub fn is_operator(&self) -> bool {
        matches!(
            self.action(),
            Some(Action::Method(_) | Action::Desired(_) | Action::Query(_) | Action::C2d(_))
        )
    }
}

/// `method:` as written: a word with `revoke`, a mapping for a direct method.
#[derive(Debug, Clone)]
pub enum MethodField {
    Revocation(RevokeMethod),
    Invoke(Box<MethodEvent>),
}

/// A direct method the operator invokes on each chosen device.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodEvent {
    /// The method's name, as the devices' `behaviour.methods` know it.
    pub name: String,
    /// Any JSON (`null` when absent).
    #[serde(default)]
    pub payload: Value,
    /// A share (`100%`) or a number (`100`) of the devices started by then; or give `query`.
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
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredEvent {
    /// Merged into the desired properties (`null` deletes one).
    pub patch: Map<String, Value>,
    /// A share (`50%`) or a number (`100`) of the devices started by then; or give `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Selection>,
    /// Or the devices this query returns (`SELECT * FROM devices WHERE …`).
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
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct C2dEvent {
    /// The body: a string as it is, anything else as JSON. `{deviceId}` and `{messageId}` are
    /// replaced by each message's device and message id.
    #[serde(default)]
    pub body: Value,
    /// Application properties (all text).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    /// A share (`10%`) or a number (`100`) of the devices started by then; or give `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Selection>,
    /// Or the devices this query returns (`SELECT * FROM devices WHERE …`).
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

/// How a certificate is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RevokeMethod {
    /// The device revokes its own certificate (`RevokeCertificate` with the certificate-JWT, so
    /// the key must be RSA).
    #[serde(rename = "self")]
    SelfRevoke,
    /// An administrator revokes it by thumbprint with the Azure AD identity (`RevokeCertificateV2`).
    #[default]
    Admin,
}

impl RevokeMethod {
    pub fn name(self) -> &'static str {
        match self {
            RevokeMethod::SelfRevoke => "self",
            RevokeMethod::Admin => "admin",
        }
    }
}

/// How a device moves from its old certificate's connection to the renewed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Swap {
    /// Close the old connection, then connect with the new certificate.
    #[default]
    BreakBeforeMake,
    /// Connect with the new certificate while the old connection is up (the hub drops the old
    /// session when the new one arrives, IoT Hub's takeover rule), then close the old one.
    MakeBeforeBreak,
}

impl Swap {
    pub fn name(self) -> &'static str {
        match self {
            Swap::BreakBeforeMake => "break-before-make",
            Swap::MakeBeforeBreak => "make-before-break",
        }
    }
}

/// The rules of one event that serde cannot express; `at` locates it.
pub(super) fn validate(e: &Event, at: Location) -> Result<(), (Location, String)> {
    let fail = |m: String| Err((at, m));
    let direct = matches!(e.method, Some(MethodField::Invoke(_)));
    let actions = [
        e.revoke.is_some(),
        direct,
        e.desired.is_some(),
        e.query.is_some(),
        e.c2d.is_some(),
    ];
    match actions.iter().filter(|a| **a).count() {
        1 => {}
        0 if e.method.is_some() => {
            return fail("method: self or admin is how a revocation is made: add revoke (e.g. revoke: 10%), or give a direct method as a mapping (method: {name: reboot, devices: 100%})".into());
        }
        0 => return fail("an event needs one of revoke, method, desired, query or c2d".into()),
        _ if e.revoke.is_some() && direct => {
            return fail(
                "revoke takes method: self or admin; a direct method is an event of its own".into(),
            );
        }
        _ => {
            return fail(
                "an event does one thing: give one of revoke, method, desired, query or c2d".into(),
            );
        }
    }
    match e.action() {
        Some(Action::Method(m)) => validate_method(m),
        Some(Action::Desired(d)) => validate_desired(d),
        Some(Action::Query(q)) => validate_query(&q.text, "query.text"),
        Some(Action::C2d(c)) => validate_c2d(c),
        _ => Ok(()),
    }
    .map_err(|m| (at, m))
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
fn validate_query(q: &str, what: &str) -> Result<(), String> {
    let lower = q.trim().to_ascii_lowercase();
    if !lower.starts_with("select ") || !lower.contains(" from devices") {
        return Err(format!(
            "{what} {q:?}: expected IoT Hub's query language, e.g. SELECT * FROM devices WHERE tags.ring = 'canary'"
        ));
    }
    Ok(())
}

fn validate_method(m: &MethodEvent) -> Result<(), String> {
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

fn validate_desired(d: &DesiredEvent) -> Result<(), String> {
    if d.patch.is_empty() {
        return Err("desired.patch is empty".into());
    }
    if let Some(k) = d.patch.keys().find(|k| k.starts_with('$')) {
        return Err(format!("desired.patch: {k} is the hub's to set"));
    }
    validate_targets(d.targets(), "desired")
}

fn validate_c2d(c: &C2dEvent) -> Result<(), String> {
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

impl JsonSchema for Selection {
    fn schema_name() -> Cow<'static, str> {
        "Selection".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Which devices: a share of those started by then (such as 50%, \
                            rounded up) or a number of them (such as 100).",
            "anyOf": [
                generator.subschema_for::<Percent>(),
                {"type": "integer", "minimum": 1, "maximum": u32::MAX},
            ],
        })
    }
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SelectionVisitor)
    }
}

impl Serialize for MethodField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MethodField::Revocation(r) => r.serialize(s),
            MethodField::Invoke(m) => m.serialize(s),
        }
    }
}

struct MethodFieldVisitor;

impl<'de> Visitor<'de> for MethodFieldVisitor {
    type Value = MethodField;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "self or admin (with revoke), or a direct method such as {name: reboot, devices: 100%}",
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<MethodField, E> {
        match v {
            "self" => Ok(MethodField::Revocation(RevokeMethod::SelfRevoke)),
            "admin" => Ok(MethodField::Revocation(RevokeMethod::Admin)),
            other => Err(E::custom(format!(
                "method {other:?}: expected self or admin (with revoke), or a direct method as a mapping such as {{name: {other}, devices: 100%}}"
            ))),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MethodField, A::Error> {
        let m = MethodEvent::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(MethodField::Invoke(Box::new(m)))
    }
}

impl JsonSchema for MethodField {
    fn schema_name() -> Cow<'static, str> {
        "MethodField".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "With revoke: who revokes, self or admin; alone: a direct method to \
                            invoke, such as {name: reboot, devices: 100%}.",
            "anyOf": [
                generator.subschema_for::<RevokeMethod>(),
                generator.subschema_for::<MethodEvent>(),
            ],
        })
    }
}

impl<'de> Deserialize<'de> for MethodField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MethodFieldVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Result<Event, String> {
        let e: Event = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        validate(&e, Location::UNKNOWN).map_err(|(_, m)| m)?;
        Ok(e)
    }

    #[test]
    fn each_kind_of_event_parses() {
        let e = event("{at: 1s, revoke: 10%, method: self}").unwrap();
        assert!(matches!(
            e.action(),
            Some(Action::Revoke {
                method: RevokeMethod::SelfRevoke,
                ..
            })
        ));
        let e = event("{at: 1s, revoke: 10%}").unwrap();
        assert!(matches!(
            e.action(),
            Some(Action::Revoke {
                method: RevokeMethod::Admin,
                ..
            })
        ));
        let e =
            event("{at: 1s, method: {name: reboot, devices: 100, payload: {a: [1]}, rate: 10/s}}")
                .unwrap();
        let Some(Action::Method(m)) = e.action() else {
            panic!("a method event")
        };
        assert_eq!(
            m.devices,
            Some(Selection::Count(NonZeroU32::new(100).unwrap()))
        );
        assert_eq!(m.payload["a"][0], 1);
        assert_eq!(m.response_timeout.0.as_secs(), 30);
        let e = event("{at: 1s, desired: {patch: {telemetryInterval: 5}, devices: 50%}}").unwrap();
        assert!(matches!(e.action(), Some(Action::Desired(_))));
        let e = event("{at: 1s, query: {text: \"SELECT COUNT() AS n FROM devices\", every: 10s}}")
            .unwrap();
        assert!(matches!(e.action(), Some(Action::Query(_))));
        let e =
            event("{at: 1s, method: {name: x, query: \"SELECT * FROM devices WHERE tags.a = 1\"}}")
                .unwrap();
        assert!(matches!(e.action(), Some(Action::Method(_))));
    }

    #[test]
    fn bad_events_are_refused_with_a_reason() {
        for (text, expect) in [
            ("{at: 1s, method: admin}", "add revoke"),
            ("{at: 1s}", "needs one of"),
            (
                "{at: 1s, revoke: 10%, method: {name: reboot, devices: 1}}",
                "event of its own",
            ),
            (
                "{at: 1s, revoke: 10%, query: {text: \"SELECT * FROM devices\"}}",
                "one thing",
            ),
            ("{at: 1s, method: reboot}", "expected self or admin"),
            ("{at: 1s, method: {name: reboot}}", "needs devices"),
            (
                "{at: 1s, method: {name: reboot, devices: 1, query: \"SELECT * FROM devices\"}}",
                "not both",
            ),
            ("{at: 1s, method: {name: reboot, devices: 0}}", "from 1"),
            (
                "{at: 1s, method: {name: reboot, devices: 1, response_timeout: 1s}}",
                "5s to 300s",
            ),
            (
                "{at: 1s, method: {name: reboot, devices: 1, connect_timeout: 10m}}",
                "at most 300s",
            ),
            (
                "{at: 1s, method: {name: reboot, devices: 1, colour: red}}",
                "colour",
            ),
            ("{at: 1s, desired: {patch: {}, devices: 1}}", "empty"),
            (
                "{at: 1s, desired: {patch: {$version: 2}, devices: 1}}",
                "the hub's",
            ),
            (
                "{at: 1s, query: {text: \"DELETE devices\"}}",
                "query language",
            ),
            (
                "{at: 1s, method: {name: x, query: \"SELECT * FROM jobs\"}}",
                "query language",
            ),
        ] {
            let err = event(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn selections_round_up_and_cap() {
        let share = Selection::Share(Percent(50.0));
        assert_eq!(share.of(3), 2);
        assert_eq!(share.of(0), 0);
        assert_eq!(Selection::Count(NonZeroU32::new(10).unwrap()).of(4), 4);
    }
}
