//! The parameters of the payload generators (`{$uniform: {min: 0, max: 1}}` and the like), each
//! checked as it is read ([`Check`], [`Checked`]), so a bad one is an error located at its
//! value. The template itself is [`super::template`].

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::Location;

/// A value the template checks as it is read; the error is located at the value.
pub trait Check {
    fn check(&self) -> Result<(), String>;
}

/// `{$counter: {start, step}}`: `start + step × n` for message `n`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    /// The first message's value (0 by default).
    #[serde(default)]
    pub start: i64,
    /// Added for each message (1 by default).
    #[serde(default = "one")]
    pub step: i64,
}

fn one() -> i64 {
    1
}

impl Check for Counter {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The most decimals a number may be rounded to (f64 holds ~15 significant digits).
const MAX_DECIMALS: u8 = 12;

fn check_decimals(decimals: Option<u8>) -> Result<(), String> {
    match decimals {
        Some(d) if d > MAX_DECIMALS => Err(format!(
            "decimals is {d}: at most {MAX_DECIMALS} are meaningful"
        )),
        _ => Ok(()),
    }
}

fn check_range(what: &str, min: f64, max: f64) -> Result<(), String> {
    if !(min.is_finite() && max.is_finite()) {
        return Err(format!("{what}: min and max must be finite numbers"));
    }
    if min >= max {
        return Err(format!("{what}: min ({min}) must be below max ({max})"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Uniform {
    /// Lowest value (included).
    pub min: f64,
    /// Highest value (excluded).
    pub max: f64,
    /// Rounds to this many decimals (0: an integer).
    #[serde(default)]
    pub decimals: Option<u8>,
}

impl Check for Uniform {
    fn check(&self) -> Result<(), String> {
        check_range("$uniform", self.min, self.max)?;
        check_decimals(self.decimals)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Normal {
    /// The mean.
    pub mean: f64,
    /// The standard deviation.
    pub stddev: f64,
    /// Draws below are clamped to this.
    #[serde(default)]
    pub min: Option<f64>,
    /// Draws above are clamped to this.
    #[serde(default)]
    pub max: Option<f64>,
    /// Rounds to this many decimals (0: an integer).
    #[serde(default)]
    pub decimals: Option<u8>,
}

impl Check for Normal {
    fn check(&self) -> Result<(), String> {
        if !(self.mean.is_finite() && self.stddev.is_finite() && self.stddev > 0.0) {
            return Err("$normal: mean must be finite and stddev above 0".into());
        }
        let min = self.min.unwrap_or(f64::MIN);
        let max = self.max.unwrap_or(f64::MAX);
        check_range("$normal", min, max)?;
        check_decimals(self.decimals)
    }
}

/// A bounded random walk, one per device and template position.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Walk {
    /// The walk is kept at or above this.
    pub min: f64,
    /// The walk is kept at or below this.
    pub max: f64,
    /// Standard deviation of one message's step.
    pub step: f64,
    /// Mean move per message (negative for a battery that drains).
    #[serde(default)]
    pub drift: f64,
    /// Where every device starts; a uniform draw in [min, max] per device when absent.
    #[serde(default)]
    pub start: Option<f64>,
    /// Rounds to this many decimals (0: an integer).
    #[serde(default)]
    pub decimals: Option<u8>,
}

impl Check for Walk {
    fn check(&self) -> Result<(), String> {
        check_range("$walk", self.min, self.max)?;
        if !(self.step.is_finite() && self.step >= 0.0 && self.drift.is_finite()) {
            return Err("$walk: step must be 0 or more and drift a finite number".into());
        }
        if self.step == 0.0 && self.drift == 0.0 {
            return Err("$walk: a walk with step 0 and drift 0 never moves: use a constant".into());
        }
        if let Some(s) = self.start
            && !(self.min..=self.max).contains(&s)
        {
            return Err(format!(
                "$walk: start ({s}) must lie between min ({}) and max ({})",
                self.min, self.max
            ));
        }
        check_decimals(self.decimals)
    }
}

/// `{$choice: {value: weight, ...}}`, in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice(pub Vec<(String, f64)>);

impl Check for Choice {
    fn check(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("$choice needs at least one value: {open: 1, closed: 9}".into());
        }
        match self.0.iter().find(|(_, w)| !(w.is_finite() && *w > 0.0)) {
            Some((v, w)) => Err(format!(
                "$choice: the weight of {v:?} is {w}: weights must be above 0"
            )),
            None => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for Choice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;
        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = Choice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of values to weights, such as {open: 1, closed: 9}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Choice, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value::<f64>()?));
                }
                Ok(Choice(out))
            }
        }
        d.deserialize_map(ChoiceVisitor)
    }
}

impl Serialize for Choice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, w) in &self.0 {
            m.serialize_entry(k, w)?;
        }
        m.end()
    }
}

impl JsonSchema for Choice {
    fn schema_name() -> Cow<'static, str> {
        "Choice".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Values and their weights (above 0): each value is drawn with its \
                            weight's share of the odds, such as {open: 1, closed: 9}.",
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
        })
    }
}

/// A probability, written `5%` or `0.05`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probability(pub f64);

impl JsonSchema for Probability {
    fn schema_name() -> Cow<'static, str> {
        "Probability".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A probability: a percentage such as 5%, or a number from 0 to 1.",
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {
                    "type": "string",
                    "pattern": format!(r"^\s*{}\s*%\s*$", super::units::NUMBER_PATTERN),
                },
            ],
        })
    }
}

impl Check for Probability {
    fn check(&self) -> Result<(), String> {
        match (0.0..=1.0).contains(&self.0) {
            true => Ok(()),
            false => Err(format!(
                "a probability must lie between 0% and 100%, not {}",
                self.0
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ProbabilityVisitor;
        impl Visitor<'_> for ProbabilityVisitor {
            type Value = Probability;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a probability such as 5% or 0.05")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Probability, E> {
                Ok(Probability(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Probability, E> {
                Ok(Probability(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Probability, E> {
                Ok(Probability(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Probability, E> {
                let bad = || E::custom(format!("invalid probability {v:?}: expected e.g. 5%"));
                let number = v.trim().strip_suffix('%').ok_or_else(bad)?;
                let p: f64 = number.trim().parse().map_err(|_| bad())?;
                Ok(Probability(p / 100.0))
            }
        }
        d.deserialize_any(ProbabilityVisitor)
    }
}

impl Serialize for Probability {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}%", self.0 * 100.0))
    }
}

/// The longest `$text` (a D2C message holds at most 256 KB).
pub const MAX_TEXT: u32 = 256 * 1024;

/// `{$text: N}`: N random lowercase letters.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Text(pub u32);

impl Check for Text {
    fn check(&self) -> Result<(), String> {
        match (1..=MAX_TEXT).contains(&self.0) {
            true => Ok(()),
            false => Err(format!(
                "$text: the length must be 1 to {MAX_TEXT}, not {}",
                self.0
            )),
        }
    }
}

/// `{$field: a.b}`: a dotted path from the payload's top, and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRef {
    pub path: String,
    pub at: Location,
}

/// `{$above: {field, threshold}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Above {
    pub field: FieldRef,
    pub threshold: f64,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AboveSpec {
    /// A dotted path to a number in the payload, such as `sensors.temperature`.
    pub field: String,
    /// True when the field is above this.
    pub threshold: f64,
}

impl Check for AboveSpec {
    fn check(&self) -> Result<(), String> {
        check_path(&self.field)?;
        match self.threshold.is_finite() {
            true => Ok(()),
            false => Err("$above: threshold must be a finite number".into()),
        }
    }
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct PathSpec(pub String);

impl Check for PathSpec {
    fn check(&self) -> Result<(), String> {
        check_path(&self.0)
    }
}

fn check_path(path: &str) -> Result<(), String> {
    match path.split('.').any(str::is_empty) {
        true => Err(format!(
            "field path {path:?}: expected keys separated by dots, such as temperature or sensor.value"
        )),
        false => Ok(()),
    }
}

/// Deserialises `T` and checks it, so a bad value is an error located at that value.
pub struct Checked<T>(pub T);

impl<'de, T: Deserialize<'de> + Check> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = T::deserialize(d)?;
        value.check().map_err(de::Error::custom)?;
        Ok(Checked(value))
    }
}
