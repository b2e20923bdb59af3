//! `behaviour`: how devices answer the cloud (at the top level, and per cohort, where each field
//! given replaces the top level's):
//!
//! ```yaml
//! behaviour:
//!   subscriptions: [methods, desired, twin]   # default: what the rest needs
//!   reported:                                 # sent after every connect (placeholders)
//!     firmwareVersion: "1.4.{index}"
//!   methods:
//!     reboot: {status: 200, payload: {ok: true}, think: {p50: 20ms, p99: 200ms},
//!              effect: reconnect, downtime: 2s}
//!     setInterval: {effect: set_interval}     # the payload: seconds, "5s" or {interval: …}
//!     renewCertificate: {effect: renew}
//!     "*": {status: 501}                      # any other method (default: 404)
//!   desired:
//!     telemetryInterval: set_interval         # applied, then acknowledged
//!     logLevel: ack                           # acknowledged only
//!   c2d:                                      # cloud-to-device messages (subscribes to c2d)
//!     reject: 5%                              # the application rejects this share
//!     abandon: 5%                             # and abandons this one
//! ```
//!
//! MQTT has no reject or abandon: a device on MQTT acknowledges every C2D message it receives
//! (PUBACK), which completes it in IoT Hub, whatever its application makes of it, as Microsoft's
//! Python device SDK does (the C# SDK refuses reject and abandon over MQTT). The `c2d` shares are
//! what the application *would* have refused: counted by the device, never sent to the hub.
//!
//! Subscriptions are IoT Hub's topic filters (reference §3): `methods`, `desired`, `twin`
//! (answers to the device's own twin requests) and `c2d`; a device may hold at most 5.
//! Validation ([`validate`]) checks that what is configured is subscribed to, and the
//! placeholders of `reported` and method payloads ([`super::placeholders`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};

use super::delay::Delay;
use super::placeholders::{Scope, check};
use super::units::{Percent, Span};

/// IoT Hub lets a device hold this many subscriptions.
pub const MAX_SUBSCRIPTIONS: usize = 5;

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// The topic filters a device subscribes to after every connect (default: those the
    /// methods, desired properties and reported properties below need).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<SubscriptionName>>")]
    pub subscriptions: Option<Spanned<Vec<SubscriptionName>>>,
    /// Reported properties the device sends after every connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub reported: Option<Spanned<Map<String, Value>>>,
    /// How the device answers each direct method, by name (`"*"`: any other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, MethodAnswer>>")]
    pub methods: Option<BTreeMap<String, Spanned<MethodAnswer>>>,
    /// The desired properties the device applies, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, DesiredAction>>")]
    pub desired: Option<Spanned<BTreeMap<String, DesiredAction>>>,
    /// What the device's application makes of cloud-to-device messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<C2dHandling>")]
    pub c2d: Option<Spanned<C2dHandling>>,
}

/// The shares of cloud-to-device messages the application rejects or abandons (the rest it
/// completes). Over MQTT the device acknowledges them all (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct C2dHandling {
    /// Share of messages the application rejects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<Percent>,
    /// Share of messages the application abandons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandon: Option<Percent>,
}

impl C2dHandling {
    /// The shares as fractions: (reject, abandon).
    pub fn fractions(&self) -> (f64, f64) {
        let f = |p: Option<Percent>| p.map_or(0.0, |p| p.fraction());
        (f(self.reject), f(self.abandon))
    }
}

/// A topic filter of IoT Hub's, by name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionName {
    Methods,
    Desired,
    Twin,
    C2d,
}

impl SubscriptionName {
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionName::Methods => "methods",
            SubscriptionName::Desired => "desired",
            SubscriptionName::Twin => "twin",
            SubscriptionName::C2d => "c2d",
        }
    }
}

/// How a device answers one direct method.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodAnswer {
    /// The status it answers with.
    #[serde(default = "ok_status")]
    pub status: i64,
    /// The answer's payload (JSON with placeholders; `null` for none).
    #[serde(default)]
    pub payload: Value,
    /// How long the device takes to answer (none: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Delay>,
    /// What the device does once it has answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    /// With `effect: reconnect`: how long the device stays away before it reconnects (a
    /// reboot's downtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime: Option<Span>,
}

fn ok_status() -> i64 {
    200
}

/// What a method makes the device do after it has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Disconnect and connect again (after `downtime`), as after a reboot.
    Reconnect,
    /// Renew the certificate now (and swap to it).
    Renew,
    /// Change the telemetry interval to the one the request's payload gives (seconds, a
    /// duration such as `"5s"`, or an object with `interval`).
    SetInterval,
}

/// What a device does with a desired property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesiredAction {
    /// The value is the telemetry interval (seconds, or a duration such as `"5s"`): applied at
    /// once, then acknowledged.
    SetInterval,
    /// Acknowledged (`{"value": …, "ac": 200, "av": $version}`) without doing anything.
    Ack,
}

impl Behaviour {
    /// This behaviour with each field `cohort` gives put over it.
    pub fn for_cohort(&self, cohort: &Behaviour) -> Behaviour {
        Behaviour {
            subscriptions: cohort
                .subscriptions
                .clone()
                .or_else(|| self.subscriptions.clone()),
            reported: cohort.reported.clone().or_else(|| self.reported.clone()),
            methods: cohort.methods.clone().or_else(|| self.methods.clone()),
            desired: cohort.desired.clone().or_else(|| self.desired.clone()),
            c2d: cohort.c2d.clone().or_else(|| self.c2d.clone()),
        }
    }

    /// Whether the device does anything cloud-to-device at all.
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_none()
            && self.reported.is_none()
            && self.methods.is_none()
            && self.desired.is_none()
            && self.c2d.is_none()
    }

    /// The subscriptions a device makes: as written, or what the rest needs (in a fixed order).
    pub fn subscriptions(&self) -> Vec<SubscriptionName> {
        if let Some(s) = &self.subscriptions {
            return s.value.clone();
        }
        let mut needed = Vec::new();
        if self.methods.is_some() {
            needed.push(SubscriptionName::Methods);
        }
        if self.desired.is_some() {
            needed.push(SubscriptionName::Desired);
        }
        if self.desired.is_some() || self.reported.is_some() {
            needed.push(SubscriptionName::Twin);
        }
        if self.c2d.is_some() {
            needed.push(SubscriptionName::C2d);
        }
        needed
    }
}

/// The rules of one resolved behaviour; `whose` prefixes messages (`""` or `cohort "x": `) and
/// `at` is where an error without a position of its own points.
pub(super) fn validate(b: &Behaviour, whose: &str, at: Location) -> Result<(), (Location, String)> {
    let here = |l: Location| match l == Location::UNKNOWN {
        true => at,
        false => l,
    };
    if let Some(s) = &b.subscriptions {
        let mut seen = s.value.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != s.value.len() {
            return Err((
                here(s.referenced),
                format!("{whose}behaviour.subscriptions: a subscription is listed twice"),
            ));
        }
        if s.value.len() > MAX_SUBSCRIPTIONS {
            return Err((
                here(s.referenced),
                format!(
                    "{whose}behaviour.subscriptions: IoT Hub allows at most {MAX_SUBSCRIPTIONS}"
                ),
            ));
        }
    }
    let subscribed = b.subscriptions();
    let needs = |what: &str, sub: SubscriptionName, l: Location| match subscribed.contains(&sub) {
        true => Ok(()),
        false => Err((
            here(l),
            format!(
                "{whose}behaviour.{what} needs the {} subscription: add it to behaviour.subscriptions",
                sub.name()
            ),
        )),
    };
    if let Some(r) = &b.reported {
        check(&Value::Object(r.value.clone()), Scope::Reported).map_err(|m| {
            (
                here(r.referenced),
                format!("{whose}behaviour.reported: {m}"),
            )
        })?;
        needs("reported", SubscriptionName::Twin, r.referenced)?;
    }
    if let Some(d) = &b.desired {
        needs("desired", SubscriptionName::Desired, d.referenced)?;
        needs("desired", SubscriptionName::Twin, d.referenced)?;
    }
    if let Some(c) = &b.c2d {
        needs("c2d", SubscriptionName::C2d, c.referenced)?;
        let (reject, abandon) = c.value.fractions();
        if reject + abandon > 1.0 {
            return Err((
                here(c.referenced),
                format!("{whose}behaviour.c2d: reject and abandon add up to more than 100%"),
            ));
        }
    }
    for (name, m) in b.methods.iter().flatten() {
        needs("methods", SubscriptionName::Methods, m.referenced)?;
        validate_method(name, &m.value).map_err(|e| {
            (
                here(m.referenced),
                format!("{whose}behaviour.methods.{name}: {e}"),
            )
        })?;
    }
    Ok(())
}

fn validate_method(name: &str, m: &MethodAnswer) -> Result<(), String> {
    if name.is_empty() {
        return Err("a method needs a name".into());
    }
    check(&m.payload, Scope::MethodAnswer)?;
    if m.downtime.is_some() && m.effect != Some(Effect::Reconnect) {
        return Err("downtime goes with effect: reconnect".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Behaviour, String> {
        let b: Behaviour = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        validate(&b, "", Location::UNKNOWN).map_err(|(_, m)| m)?;
        Ok(b)
    }

    #[test]
    fn subscriptions_default_to_what_is_configured() {
        let b = parse("methods: {reboot: {effect: reconnect, downtime: 1s}}\n").unwrap();
        assert_eq!(b.subscriptions(), vec![SubscriptionName::Methods]);
        let b = parse("desired: {telemetryInterval: set_interval}\nreported: {v: \"{index}\"}\n")
            .unwrap();
        assert_eq!(
            b.subscriptions(),
            vec![SubscriptionName::Desired, SubscriptionName::Twin]
        );
        assert!(parse("").unwrap().is_empty());
        let b = parse("c2d: {reject: 10%}\n").unwrap();
        assert_eq!(b.subscriptions(), vec![SubscriptionName::C2d]);
        assert_eq!(b.c2d.unwrap().value.fractions(), (0.1, 0.0));
    }

    #[test]
    fn bad_behaviours_are_refused() {
        for (text, expect) in [
            ("subscriptions: [methods, methods]\n", "listed twice"),
            (
                "subscriptions: [twin]\nmethods: {reboot: {}}\n",
                "needs the methods subscription",
            ),
            (
                "subscriptions: [desired]\ndesired: {a: ack}\n",
                "needs the twin subscription",
            ),
            ("reported: {v: \"{request}\"}\n", "unknown placeholder"),
            (
                "methods: {reboot: {downtime: 1s}}\n",
                "downtime goes with effect: reconnect",
            ),
            ("methods: {reboot: {effect: explode}}\n", "explode"),
            ("desired: {a: apply}\n", "apply"),
            ("subscriptions: [telemetry]\n", "telemetry"),
            ("method: {}\n", "method"),
            (
                "subscriptions: [twin]\nc2d: {reject: 5%}\n",
                "needs the c2d subscription",
            ),
            ("c2d: {reject: 60%, abandon: 50%}\n", "more than 100%"),
            ("c2d: {complete: 5%}\n", "complete"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn a_cohort_replaces_what_it_gives() {
        let top = parse("reported: {v: 1}\nmethods: {reboot: {}}\n").unwrap();
        let cohort = parse("methods: {ping: {status: 204}}\n").unwrap();
        let b = top.for_cohort(&cohort);
        assert!(b.reported.is_some());
        let methods = b.methods.unwrap();
        assert!(methods.contains_key("ping") && !methods.contains_key("reboot"));
    }
}
