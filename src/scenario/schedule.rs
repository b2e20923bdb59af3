//! `telemetry.schedule`: when a device's messages are due.
//!
//! - `{every: 30s}`: a fixed interval (what `telemetry.interval: 30s` means);
//! - `{every: 30s, jitter: 10%}` (or `jitter: 3s`): each gap is the interval ± up to the jitter,
//!   uniformly, so devices drift apart;
//! - `{poisson: 4/h}`: exponential gaps, the arrivals of rare, independent events;
//! - `{every: 30s, align: 1m}`: on the wall clock: the first message at the next whole minute,
//!   then every 30 s, so every device of the fleet sends at the same instants (the herd);
//!   `jitter` then delays each message by up to that much after its tick;
//! - `count: 20, spacing: 100ms` with any of these: each tick is a burst of 20 messages 100 ms
//!   apart (`{every: 10m, count: 20, spacing: 100ms}`).
//!
//! The first message is due when the device comes online, except with `align`, where it is due
//! at the first aligned tick, and with `poisson`, where it comes after a first exponential gap
//! (coming online is not an event). Latency counts from when each message was due (the open
//! model), so a herd that the hub or the simulator cannot take at once shows up as latency.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::units::{Rate, Span};

/// A checked schedule.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "ScheduleFields", into = "ScheduleFields")]
pub struct Schedule {
    pub ticks: Ticks,
    /// Messages per tick (1 unless bursts).
    pub count: u32,
    /// Time between the messages of a burst.
    pub spacing: Duration,
}

/// When ticks (single messages, or the starts of bursts) are due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ticks {
    Every {
        every: Duration,
        jitter: Jitter,
    },
    Aligned {
        every: Duration,
        align: Duration,
        jitter: Jitter,
    },
    Poisson {
        mean: Duration,
    },
}

/// How far a tick may move: a share of the interval or a span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    None,
    Fraction(f64),
    Span(Duration),
}

impl Jitter {
    /// The largest move for an interval of `every`.
    pub fn amplitude(&self, every: Duration) -> Duration {
        match *self {
            Jitter::None => Duration::ZERO,
            Jitter::Fraction(f) => every.mul_f64(f),
            Jitter::Span(d) => d,
        }
    }
}

impl Schedule {
    /// A fixed interval.
    pub fn every(every: Duration) -> Self {
        Self {
            ticks: Ticks::Every {
                every,
                jitter: Jitter::None,
            },
            count: 1,
            spacing: Duration::ZERO,
        }
    }

    /// The mean time between ticks.
    pub fn mean_interval(&self) -> Duration {
        match self.ticks {
            Ticks::Every { every, .. } | Ticks::Aligned { every, .. } => every,
            Ticks::Poisson { mean } => mean,
        }
    }

    /// Messages per second one device sends on average.
    pub fn messages_per_second(&self) -> f64 {
        f64::from(self.count) / self.mean_interval().as_secs_f64()
    }
}

/// `schedule` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ScheduleFields {
    /// A fixed interval between ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<Span>,
    /// Or ticks as a Poisson process at this rate (exponential gaps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    poisson: Option<Rate>,
    /// Each gap is the interval ± up to this (with `align`: each message is delayed by up to this),
    /// as a share (`10%`) or a duration (`2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter: Option<Jitter>,
    /// Ticks on the wall clock: the first at the next multiple of this, so the whole fleet sends
    /// together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    align: Option<Span>,
    /// Messages per tick: a burst (needs `spacing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<NonZeroU32>,
    /// Time between the messages of a burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spacing: Option<Span>,
}

impl TryFrom<ScheduleFields> for Schedule {
    type Error = String;

    fn try_from(f: ScheduleFields) -> Result<Self, String> {
        let count = f.count.map_or(1, NonZeroU32::get);
        let spacing = f.spacing.map_or(Duration::ZERO, |s| s.0);
        match (count, f.spacing) {
            (1, Some(_)) => return Err("schedule: spacing is for bursts: give count too".into()),
            (c, None) if c > 1 => {
                return Err(
                    "schedule: a burst (count > 1) needs spacing, e.g. spacing: 100ms".into(),
                );
            }
            _ => {}
        }
        let jitter = f.jitter.unwrap_or(Jitter::None);
        let ticks = match (f.every, f.poisson) {
            (Some(_), Some(_)) => return Err("schedule: give every or poisson, not both".into()),
            (None, None) => {
                return Err(
                    "schedule needs every (e.g. every: 30s) or poisson (e.g. poisson: 4/h)".into(),
                );
            }
            (None, Some(rate)) => {
                if f.jitter.is_some() || f.align.is_some() {
                    return Err("schedule: poisson arrivals take neither jitter nor align".into());
                }
                Ticks::Poisson {
                    mean: Duration::from_secs_f64(1.0 / rate.0),
                }
            }
            (Some(every), None) => {
                let every = every.0;
                if jitter.amplitude(every) >= every {
                    return Err(format!(
                        "schedule: jitter must be less than the interval ({} ms)",
                        every.as_millis()
                    ));
                }
                match f.align {
                    Some(align) => Ticks::Aligned {
                        every,
                        align: align.0,
                        jitter,
                    },
                    None => Ticks::Every { every, jitter },
                }
            }
        };
        let schedule = Schedule {
            ticks,
            count,
            spacing,
        };
        let burst = spacing * (count - 1);
        if !matches!(ticks, Ticks::Poisson { .. }) && burst >= schedule.mean_interval() {
            return Err(format!(
                "schedule: a burst of {count} messages {} ms apart lasts longer than the interval",
                spacing.as_millis()
            ));
        }
        Ok(schedule)
    }
}

impl From<Schedule> for ScheduleFields {
    fn from(s: Schedule) -> Self {
        let burst = s.count > 1;
        let mut f = ScheduleFields {
            count: NonZeroU32::new(s.count).filter(|_| burst),
            spacing: burst.then_some(Span(s.spacing)),
            ..Default::default()
        };
        let jitter = |j: Jitter| (j != Jitter::None).then_some(j);
        match s.ticks {
            Ticks::Every { every, jitter: j } => {
                f.every = Some(Span(every));
                f.jitter = jitter(j);
            }
            Ticks::Aligned {
                every,
                align,
                jitter: j,
            } => {
                f.every = Some(Span(every));
                f.align = Some(Span(align));
                f.jitter = jitter(j);
            }
            Ticks::Poisson { mean } => f.poisson = Some(Rate(1.0 / mean.as_secs_f64())),
        }
        f
    }
}

impl JsonSchema for Jitter {
    fn schema_name() -> Cow<'static, str> {
        "Jitter".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "How far a tick may move: a share of the interval (between 0% and \
                            100%, such as 10%) or a duration (such as 2s).",
            "anyOf": [
                {
                    "type": "string",
                    "pattern": format!(r"^\s*{}\s*%\s*$", super::units::NUMBER_PATTERN),
                },
                generator.subschema_for::<Span>(),
            ],
        })
    }
}

impl<'de> Deserialize<'de> for Jitter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Jitter;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a share of the interval such as 10%, or a duration such as 2s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Jitter, E> {
                if let Some(number) = v.trim().strip_suffix('%') {
                    return match number.trim().parse::<f64>() {
                        Ok(p) if p > 0.0 && p < 100.0 => Ok(Jitter::Fraction(p / 100.0)),
                        _ => Err(E::custom(format!(
                            "invalid jitter {v:?}: a share must lie between 0% and 100%"
                        ))),
                    };
                }
                v.parse::<Span>().map(|s| Jitter::Span(s.0)).map_err(|_| {
                    E::custom(format!("invalid jitter {v:?}: expected e.g. 10% or 2s"))
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Jitter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Jitter::None => s.serialize_none(),
            Jitter::Fraction(f) => s.serialize_str(&format!("{}%", f * 100.0)),
            Jitter::Span(d) => Span(d).serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Schedule, String> {
        serde_saphyr::from_str::<Schedule>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_parses_and_bad_ones_are_refused() {
        let s = parse("{every: 30s, align: 1m}").unwrap();
        assert_eq!(
            s.ticks,
            Ticks::Aligned {
                every: Duration::from_secs(30),
                align: Duration::from_secs(60),
                jitter: Jitter::None
            }
        );
        let s = parse("{every: 10m, count: 20, spacing: 100ms}").unwrap();
        assert_eq!((s.count, s.spacing), (20, Duration::from_millis(100)));
        assert!((s.messages_per_second() - 20.0 / 600.0).abs() < 1e-12);
        let s = parse("{poisson: 4/h}").unwrap();
        assert_eq!(s.mean_interval(), Duration::from_secs(900));
        let s = parse("{every: 10s, jitter: 10%}").unwrap();
        assert_eq!(
            s.ticks,
            Ticks::Every {
                every: Duration::from_secs(10),
                jitter: Jitter::Fraction(0.1)
            }
        );
        for (bad, why) in [
            ("{every: 1s, poisson: 1/s}", "not both"),
            ("{jitter: 1s}", "needs every"),
            ("{every: 1s, jitter: 1s}", "less than the interval"),
            ("{every: 1s, count: 5}", "needs spacing"),
            ("{every: 1s, spacing: 5ms}", "give count"),
            (
                "{every: 1s, count: 11, spacing: 100ms}",
                "longer than the interval",
            ),
            ("{poisson: 1/s, align: 1m}", "neither jitter nor align"),
            ("{every: 1s, jitter: 150%}", "between 0% and 100%"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn schedules_serialize_as_written() {
        for yaml in [
            "{every: 30s, align: 1m, jitter: 2s}",
            "{poisson: 2/s, count: 3, spacing: 10ms}",
            "{every: 5s, jitter: 10%}",
        ] {
            let s = parse(yaml).unwrap();
            let json = serde_json::to_string(&s).unwrap();
            let back: Schedule = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s, "{json}");
        }
    }
}
