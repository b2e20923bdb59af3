//! A delay drawn from a distribution, written in scenarios as a duration or a small mapping:
//!
//! ```yaml
//! think: 50ms                        # always 50 ms
//! think: {min: 10ms, max: 200ms}     # uniform between the two
//! think: {mean: 50ms}                # exponential (memoryless) with that mean
//! think: {p50: 20ms, p99: 300ms}     # log-normal through those two percentiles
//! ```
//!
//! Parsed in its own `Deserialize`, so a bad one is reported with its line and column.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use super::draw;
use super::units::Span;

/// A distribution of durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delay {
    Fixed(Duration),
    Uniform { min: Duration, max: Duration },
    Exponential { mean: Duration },
    LogNormal { p50: Duration, p99: Duration },
}

/// The longest delay a draw returns (a log-normal's tail is unbounded).
const MAX_DRAW: Duration = Duration::from_secs(3600);

impl Delay {
    /// One draw.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let secs = match *self {
            Delay::Fixed(d) => return d,
            Delay::Uniform { min, max } => rng.random_range(min.as_secs_f64()..=max.as_secs_f64()),
            Delay::Exponential { mean } => draw::exponential(rng, mean.as_secs_f64()),
            Delay::LogNormal { p50, p99 } => {
                let median = p50.as_secs_f64().max(1e-9);
                let (mu, sigma) = draw::lognormal_parameters(median, p99.as_secs_f64().max(median));
                draw::lognormal(rng, mu, sigma)
            }
        };
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_DRAW)
            .min(MAX_DRAW)
    }

    /// The typical delay (the median, or the fixed value), for documentation and reports.
    pub fn median(&self) -> Duration {
        match *self {
            Delay::Fixed(d) => d,
            Delay::Uniform { min, max } => (min + max) / 2,
            Delay::Exponential { mean } => mean.mul_f64(std::f64::consts::LN_2),
            Delay::LogNormal { p50, .. } => p50,
        }
    }
}

/// The mapping form, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shape {
    #[serde(default)]
    min: Option<Span>,
    #[serde(default)]
    max: Option<Span>,
    #[serde(default)]
    mean: Option<Span>,
    #[serde(default)]
    p50: Option<Span>,
    #[serde(default)]
    p99: Option<Span>,
}

const HELP: &str = "a duration (e.g. 50ms) or one of {min: D, max: D}, {mean: D}, {p50: D, p99: D}";

impl Shape {
    fn delay(self) -> Result<Delay, String> {
        let d = |s: Option<Span>| s.map(|s| s.0);
        match (
            d(self.min),
            d(self.max),
            d(self.mean),
            d(self.p50),
            d(self.p99),
        ) {
            (Some(min), Some(max), None, None, None) if min <= max => {
                Ok(Delay::Uniform { min, max })
            }
            (Some(_), Some(_), None, None, None) => Err("delay: min is above max".into()),
            (None, None, Some(mean), None, None) => Ok(Delay::Exponential { mean }),
            (None, None, None, Some(p50), Some(p99)) if p50 <= p99 => {
                Ok(Delay::LogNormal { p50, p99 })
            }
            (None, None, None, Some(_), Some(_)) => Err("delay: p50 is above p99".into()),
            _ => Err(format!("delay: expected {HELP}")),
        }
    }
}

struct DelayVisitor;

impl<'de> Visitor<'de> for DelayVisitor {
    type Value = Delay;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(HELP)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Delay, E> {
        v.parse::<Span>()
            .map(|s| Delay::Fixed(s.0))
            .map_err(E::custom)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Delay, A::Error> {
        let shape = Shape::deserialize(de::value::MapAccessDeserializer::new(map))?;
        shape.delay().map_err(de::Error::custom)
    }
}

impl JsonSchema for Delay {
    fn schema_name() -> Cow<'static, str> {
        "Delay".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let span = generator.subschema_for::<Span>();
        let shape = |keys: &[(&str, &str)]| {
            let properties: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .map(|(k, d)| (k.to_string(), json!({"allOf": [span], "description": d})))
                .collect();
            let required: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
            json_schema!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            })
        };
        json_schema!({
            "description": HELP,
            "anyOf": [
                span.clone(),
                shape(&[("min", "Uniform: the shortest delay."), ("max", "Uniform: the longest.")]),
                shape(&[("mean", "Exponential (memoryless) with this mean.")]),
                shape(&[
                    ("p50", "Log-normal through this median…"),
                    ("p99", "…and this 99th percentile."),
                ]),
            ],
        })
    }
}

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DelayVisitor)
    }
}

impl Serialize for Delay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let text = match *self {
            Delay::Fixed(d) => ms(d),
            Delay::Uniform { min, max } => format!("{{min: {}, max: {}}}", ms(min), ms(max)),
            Delay::Exponential { mean } => format!("{{mean: {}}}", ms(mean)),
            Delay::LogNormal { p50, p99 } => format!("{{p50: {}, p99: {}}}", ms(p50), ms(p99)),
        };
        s.serialize_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn parse(text: &str) -> Result<Delay, String> {
        serde_saphyr::from_str::<Delay>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn delays_parse_in_every_form() {
        assert_eq!(
            parse("50ms").unwrap(),
            Delay::Fixed(Duration::from_millis(50))
        );
        assert!(matches!(
            parse("{min: 10ms, max: 20ms}").unwrap(),
            Delay::Uniform { .. }
        ));
        assert!(matches!(
            parse("{mean: 5ms}").unwrap(),
            Delay::Exponential { .. }
        ));
        assert!(matches!(
            parse("{p50: 5ms, p99: 50ms}").unwrap(),
            Delay::LogNormal { .. }
        ));
        for bad in [
            "50",
            "{min: 20ms, max: 10ms}",
            "{min: 10ms}",
            "{p50: 5ms}",
            "{p50: 5ms, p99: 1ms}",
            "{mean: 5ms, p50: 1ms}",
            "{median: 5ms}",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn draws_follow_their_distribution() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut draws = |d: Delay| -> Vec<f64> {
            let mut v: Vec<f64> = (0..4000)
                .map(|_| d.sample(&mut rng).as_secs_f64() * 1000.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let ms = Duration::from_millis;
        let u = draws(Delay::Uniform {
            min: ms(10),
            max: ms(20),
        });
        assert!(u[0] >= 10.0 && u[3999] <= 20.0);
        let l = draws(Delay::LogNormal {
            p50: ms(20),
            p99: ms(200),
        });
        assert!((15.0..25.0).contains(&l[2000]), "p50 {}", l[2000]);
        assert!((120.0..330.0).contains(&l[3960]), "p99 {}", l[3960]);
        let e = draws(Delay::Exponential { mean: ms(50) });
        let mean = e.iter().sum::<f64>() / e.len() as f64;
        assert!((40.0..60.0).contains(&mean), "mean {mean}");
        assert_eq!(Delay::Fixed(ms(7)).sample(&mut rng), ms(7));
    }
}
