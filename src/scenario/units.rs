//! Units written in scenarios: durations (`500ms`, `30s`, `5m`, `2h`, `10d`), rates (`50/s`,
//! `3000/min`) and percentages (`80%`). Each parses in its `Deserialize` impl so that a bad value is
//! reported by the YAML loader with the line and column it came from.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
        Ok(Span(Duration::from_secs_f64(seconds)))
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
        Ok(Rate(count / seconds))
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
    fn rates_are_per_second() {
        assert_eq!("50/s".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!("3000/min".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!("3600/h".parse::<Rate>().unwrap().0, 1.0);
        for bad in ["50", "50/fortnight", "0/s", "/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} should not parse");
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
