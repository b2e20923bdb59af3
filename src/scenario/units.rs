//! Units written in scenarios: durations (`500ms`, `30s`, `5m`, `2h`, `10d`), rates (`50/s`,
//! `3000/min`) and percentages (`80%`). Each parses in its `Deserialize` impl so that a bad value is
//! reported by the YAML loader with the line and column it came from.
//!
//! Each is bounded so that nothing computed from it later can overflow: a duration lies within
//! [1 ns, [`MAX_SPAN`]] (a `Duration` holds at most 2^64 s, `Instant + Duration` panics past
//! the clock's i64 seconds, and certificate dates end in the year 9999); a rate's interval
//! between two events lies in the same range, so rates lie within [[`MIN_RATE`], [`MAX_RATE`]].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A span of time written with a unit suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

/// Events per second, written as `N/s`, `N/min` or `N/h`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(pub f64);

/// A percentage in (0, 100], written as `80%`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

/// The longest duration a scenario may write: 100 years (36,525 days). Longer than any run, and
/// far enough from every overflow that sums of spans, `Instant`s and certificate dates stay exact.
pub const MAX_SPAN: Duration = Duration::from_secs(36_525 * 86_400);

/// The shortest duration: `Duration`'s resolution. Shorter values would round to zero.
pub const MIN_SPAN: Duration = Duration::from_nanos(1);

/// The highest rate: one event per nanosecond (the interval would round to zero above it).
pub const MAX_RATE: f64 = 1e9;

/// The lowest rate: one event per [`MAX_SPAN`].
pub const MIN_RATE: f64 = 1.0 / (36_525.0 * 86_400.0);

const SPAN_HELP: &str = "a duration such as 500ms, 30s, 5m, 2h or 10d";
const RATE_HELP: &str = "a rate such as 50/s, 3000/min or 100/h";
const PERCENT_HELP: &str = "a percentage between 0% and 100% (exclusive of 0), such as 80%";

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let value: f64 = s[..end].parse().ok()?;
    value.is_finite().then_some((value, s[end..].trim()))
}

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {s:?}: expected {SPAN_HELP}");
        let (value, unit) = split_number(s).ok_or_else(bad)?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86_400.0,
            _ => return Err(bad()),
        };
        if seconds <= 0.0 {
            return Err(format!("invalid duration {s:?}: must be greater than zero"));
        }
        if seconds > MAX_SPAN.as_secs_f64() {
            return Err(format!(
                "invalid duration {s:?}: at most {} days (100 years)",
                MAX_SPAN.as_secs() / 86_400
            ));
        }
        match Duration::try_from_secs_f64(seconds) {
            Ok(d) if d >= MIN_SPAN => Ok(Span(d)),
            _ => Err(format!(
                "invalid duration {s:?}: at least 1 ns (the resolution of time here)"
            )),
        }
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid rate {s:?}: expected {RATE_HELP}");
        let (count, rest) = split_number(s).ok_or_else(bad)?;
        let per = rest.strip_prefix('/').ok_or_else(bad)?.trim();
        let seconds = match per {
            "s" => 1.0,
            "min" | "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        if count <= 0.0 {
            return Err(format!("invalid rate {s:?}: must be greater than zero"));
        }
        let rate = count / seconds;
        if rate > MAX_RATE {
            return Err(format!(
                "invalid rate {s:?}: at most {MAX_RATE}/s (one event per nanosecond)"
            ));
        }
        if rate < MIN_RATE {
            return Err(format!(
                "invalid rate {s:?}: at least one event per 100 years ({MIN_RATE:e}/s)"
            ));
        }
        Ok(Rate(rate))
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid percentage {s:?}: expected {PERCENT_HELP}");
        let (value, rest) = split_number(s).ok_or_else(bad)?;
        if rest != "%" || value <= 0.0 || value > 100.0 {
            return Err(bad());
        }
        Ok(Percent(value))
    }
}

/// Deserialises any of the unit types from a YAML string (or a bare number where that is
/// unambiguous: never, for these types, since the unit is the point).
struct UnitVisitor<T>(&'static str, std::marker::PhantomData<T>);

impl<T: FromStr<Err = String>> Visitor<'_> for UnitVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

macro_rules! unit_serde {
    ($ty:ty, $help:expr, $show:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(UnitVisitor::<$ty>($help, std::marker::PhantomData))
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let show: fn(&$ty) -> String = $show;
                s.serialize_str(&show(self))
            }
        }
    };
}

unit_serde!(Span, SPAN_HELP, |v| format!("{}ms", v.0.as_millis()));
unit_serde!(Rate, RATE_HELP, |v| format!("{}/s", v.0));
unit_serde!(Percent, PERCENT_HELP, |v| format!("{}%", v.0));

/// A number as the unit parsers read it (digits with at most one dot), for the JSON Schema's
/// patterns (see [`super::schema`]); the bounds are in the descriptions, not the patterns.
pub(super) const NUMBER_PATTERN: &str = r"([0-9]+\.?[0-9]*|\.[0-9]+)";

/// A string schema that matches `^ number unit $`, spaces allowed around both.
pub(super) fn unit_schema(unit: &str, description: &str, examples: &[&str]) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": format!(r"^\s*{NUMBER_PATTERN}\s*{unit}\s*$"),
        "description": description,
        "examples": examples,
    })
}

impl JsonSchema for Span {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        unit_schema(
            "(ms|s|m|min|h|d)",
            "A duration: a number and a unit (ms, s, m or min, h, d), above 0 and at most 36525d \
             (100 years), such as 500ms, 30s, 5m, 2h or 10d.",
            &["30s", "5m"],
        )
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        unit_schema(
            r"/\s*(s|min|m|h)",
            "Events per unit of time: N/s, N/min (or N/m) or N/h, above 0 and at most 1e9/s, \
             such as 50/s, 3000/min or 100/h.",
            &["50/s", "3000/min"],
        )
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        unit_schema(
            "%",
            "A percentage above 0% and at most 100%, such as 80% or 0.5%.",
            &["80%"],
        )
    }
}

impl Span {
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl Percent {
    pub fn fraction(&self) -> f64 {
        self.0 / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            "500ms".parse::<Span>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!("30s".parse::<Span>().unwrap().0, Duration::from_secs(30));
        assert_eq!("5m".parse::<Span>().unwrap().0, Duration::from_secs(300));
        assert_eq!("1.5h".parse::<Span>().unwrap().0, Duration::from_secs(5400));
        assert_eq!(
            "10d".parse::<Span>().unwrap().0,
            Duration::from_secs(864_000)
        );
        for bad in ["30", "30 parsecs", "-5s", "0s", "s", ""] {
            assert!(bad.parse::<Span>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!("36525d".parse::<Span>().unwrap().0, MAX_SPAN);
        assert_eq!("0.000001ms".parse::<Span>().unwrap().0, MIN_SPAN);
        // Past Duration's range (this one used to panic), past 100 years, below 1 ns.
        for bad in [
            "18446744073709551615s",
            "99999999999999999999999999999999d",
            "36526d",
            "0.0000001ms",
            "0.00000000000000000000000001s",
        ] {
            let err = bad.parse::<Span>().unwrap_err();
            assert!(
                err.contains("at most") || err.contains("at least"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rates_are_per_second() {
        assert_eq!("50/s".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!("3000/min".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!("3600/h".parse::<Rate>().unwrap().0, 1.0);
        for bad in ["50", "50/fortnight", "0/s", "/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn rates_are_bounded_so_intervals_fit() {
        assert_eq!("1000000000/s".parse::<Rate>().unwrap().0, MAX_RATE);
        assert!("1/h".parse::<Rate>().unwrap().0 > MIN_RATE);
        // 1e-20/s would make the interval 1e20 s, past Duration's range (this used to panic in
        // the arrivals task).
        for bad in ["0.00000000000000000001/s", "1000000001/s", "0.0000001/h"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(
                err.contains("at most") || err.contains("at least"),
                "{bad}: {err}"
            );
        }
        for ok in ["0.01/h", "60000000000/min"] {
            let rate = ok.parse::<Rate>().unwrap().0;
            assert!(Duration::try_from_secs_f64(1.0 / rate).is_ok(), "{ok}");
        }
    }

    #[test]
    fn percentages_are_bounded() {
        assert_eq!("80%".parse::<Percent>().unwrap().fraction(), 0.8);
        for bad in ["80", "0%", "101%", "abc%"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad} should not parse");
        }
    }
}
