//! How a device answers the cloud, resolved from its cohort's scenario `behaviour` once and
//! shared by the cohort's devices ([`CloudBehaviour`]): the topic filters it subscribes to after
//! every connect, the reported properties it sends then, how it answers each direct method and
//! which desired properties it applies. A device without one makes no subscriptions and keeps
//! no state for the cloud.
//!
//! A leaf: it imports nothing else of `device`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::iothub::topics::Subscription;
use crate::scenario::behaviour::{
    Behaviour, DesiredAction, Effect, MethodAnswer as ScenarioAnswer, SubscriptionName,
};
use crate::scenario::delay::Delay;

/// A cohort's behaviour, ready for its devices.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudBehaviour {
    pub subscriptions: Vec<Subscription>,
    /// Reported properties sent after every connect (a template; see
    /// [`crate::scenario::placeholders`]).
    pub reported: Option<Value>,
    /// Answers by method name; `"*"` answers any other.
    pub methods: BTreeMap<String, MethodAnswer>,
    /// What the device does with each desired property it knows.
    pub desired: BTreeMap<String, DesiredAction>,
    /// The shares of C2D messages its application rejects and abandons (fractions).
    pub c2d_reject: f64,
    pub c2d_abandon: f64,
}

/// How the device answers one method.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodAnswer {
    pub status: i64,
    /// A template.
    pub payload: Value,
    pub think: Option<Delay>,
    pub effect: Option<Effect>,
    pub downtime: Duration,
}

/// The name under which any other method is answered.
pub const ANY_METHOD: &str = "*";

impl CloudBehaviour {
    /// The behaviour `b` describes, or `None` when it describes none (a telemetry-only device).
    pub fn from_scenario(b: &Behaviour) -> Option<Self> {
        if b.is_empty() {
            return None;
        }
        let subscriptions = b
            .subscriptions()
            .into_iter()
            .map(|s| match s {
                SubscriptionName::Methods => Subscription::Methods,
                SubscriptionName::Desired => Subscription::Desired,
                SubscriptionName::Twin => Subscription::Twin,
                SubscriptionName::C2d => Subscription::C2d,
            })
            .collect();
        let methods = b
            .methods
            .iter()
            .flatten()
            .map(|(name, m)| (name.clone(), answer(&m.value)))
            .collect();
        let (c2d_reject, c2d_abandon) = b.c2d.as_ref().map_or((0.0, 0.0), |c| c.value.fractions());
        Some(Self {
            c2d_reject,
            c2d_abandon,
            subscriptions,
            reported: b.reported.as_ref().map(|r| Value::Object(r.value.clone())),
            methods,
            desired: b
                .desired
                .as_ref()
                .map(|d| d.value.clone())
                .unwrap_or_default(),
        })
    }

    /// Whether the device subscribed to `s`.
    pub fn subscribes(&self, s: Subscription) -> bool {
        self.subscriptions.contains(&s)
    }

    /// The answer to method `name`: its own, or the one for any method.
    pub fn method(&self, name: &str) -> Option<&MethodAnswer> {
        self.methods
            .get(name)
            .or_else(|| self.methods.get(ANY_METHOD))
    }
}

fn answer(m: &ScenarioAnswer) -> MethodAnswer {
    MethodAnswer {
        status: m.status,
        payload: m.payload.clone(),
        think: m.think,
        effect: m.effect,
        downtime: m.downtime.map_or(Duration::ZERO, |d| d.0),
    }
}

/// A telemetry interval from a desired property's or a method's value: a number of seconds, a
/// duration such as `"5s"`, or an object with `interval` (or `seconds`) holding one of those.
pub fn interval_from(value: &Value) -> Result<Duration, String> {
    let d = match value {
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("{n} is not a number of seconds"))?
        }
        Value::String(s) => s
            .parse::<crate::scenario::Span>()
            .map(|s| s.0)
            .or_else(|e| match s.trim().parse::<f64>() {
                Ok(secs) => interval_from(&Value::from(secs)),
                Err(_) => Err(e),
            })?,
        Value::Object(o) => {
            return match o.get("interval").or_else(|| o.get("seconds")) {
                Some(inner) => interval_from(inner),
                None => Err("expected an object with interval".into()),
            };
        }
        other => return Err(format!("{other} is not an interval")),
    };
    if d.is_zero() || d > MAX_INTERVAL {
        return Err(format!(
            "{value} is outside (0, {} days]",
            MAX_INTERVAL.as_secs() / 86_400
        ));
    }
    Ok(d)
}

/// The longest telemetry interval a device accepts from the cloud.
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn intervals_come_in_several_spellings() {
        assert_eq!(interval_from(&json!(5)).unwrap(), Duration::from_secs(5));
        assert_eq!(
            interval_from(&json!(0.5)).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            interval_from(&json!("250ms")).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(interval_from(&json!("2")).unwrap(), Duration::from_secs(2));
        assert_eq!(
            interval_from(&json!({"interval": "1m"})).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            interval_from(&json!({"seconds": 3})).unwrap(),
            Duration::from_secs(3)
        );
        for bad in [
            json!(0),
            json!(-1),
            json!("soon"),
            json!(null),
            json!([1]),
            json!({}),
            json!(1e12),
        ] {
            assert!(interval_from(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_behaviour_resolves_for_its_devices() {
        let b: Behaviour = serde_saphyr::from_str(
            "methods: {reboot: {effect: reconnect, downtime: 2s}, \"*\": {status: 501}}\n\
             desired: {telemetryInterval: set_interval}\n",
        )
        .unwrap();
        let cloud = CloudBehaviour::from_scenario(&b).unwrap();
        assert_eq!(
            cloud.subscriptions,
            vec![
                Subscription::Methods,
                Subscription::Desired,
                Subscription::Twin
            ]
        );
        assert_eq!(
            cloud.method("reboot").unwrap().downtime,
            Duration::from_secs(2)
        );
        assert_eq!(cloud.method("other").unwrap().status, 501);
        assert!(CloudBehaviour::from_scenario(&Behaviour::default()).is_none());
    }
}
