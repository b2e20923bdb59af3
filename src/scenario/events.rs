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
//! Also here: how a renewed certificate replaces the old connection (`certificate.swap`). The
//! operator events' own types and rules live in `events/operator.rs`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_saphyr::Location;

use super::units::{Percent, Span};

mod operator;

pub use operator::{C2dEvent, DesiredEvent, MethodEvent, QueryEvent, Selection, Targets};
use operator::{validate_c2d, validate_desired, validate_method, validate_query};

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
    /// Move a SAS cohort's devices to EZCA certificates (see `scenario::sas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<super::sas::MigrateEvent>,
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
    Migrate(&'a super::sas::MigrateEvent),
}

impl Event {
    /// What the event does, for an event the loader has checked ([`validate`]); an unchecked
    /// one that names none is read as a query that never runs.
    pub fn action(&self) -> Option<Action<'_>> {
        if let Some(m) = &self.migrate {
            let alone = self.revoke.is_none()
                && self.method.is_none()
                && self.desired.is_none()
                && self.query.is_none()
                && self.c2d.is_none();
            return alone.then_some(Action::Migrate(m));
        }
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
        e.migrate.is_some(),
    ];
    match actions.iter().filter(|a| **a).count() {
        1 => {}
        0 if e.method.is_some() => {
            return fail("method: self or admin is how a revocation is made: add revoke (e.g. revoke: 10%), or give a direct method as a mapping (method: {name: reboot, devices: 100%})".into());
        }
        0 => {
            return fail(
                "an event needs one of revoke, method, desired, query, c2d or migrate".into(),
            );
        }
        _ if e.revoke.is_some() && direct => {
            return fail(
                "revoke takes method: self or admin; a direct method is an event of its own".into(),
            );
        }
        _ => {
            return fail(
                "an event does one thing: give one of revoke, method, desired, query, c2d or migrate"
                    .into(),
            );
        }
    }
    match e.action() {
        Some(Action::Method(m)) => validate_method(m),
        Some(Action::Desired(d)) => validate_desired(d),
        Some(Action::Query(q)) => validate_query(&q.text, "query.text"),
        Some(Action::C2d(c)) => validate_c2d(c),
        Some(Action::Migrate(m)) if !m.rate.0.is_finite() || m.rate.0 <= 0.0 => {
            Err("migrate.rate must be above 0 (e.g. rate: 50/s)".into())
        }
        _ => Ok(()),
    }
    .map_err(|m| (at, m))
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
    use std::num::NonZeroU32;

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
