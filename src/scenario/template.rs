//! Payload templates (`telemetry.payload.json`) and templated property values: a JSON document
//! written in YAML, in which some values are *generators*. Constants are written as they are;
//! a generator is a string starting with `$` or a mapping with one key starting with `$`:
//!
//! | generator | yields |
//! |---|---|
//! | `$device.id`, `$device.cohort`, `$device.index` | the device's id, cohort name, fleet-wide index |
//! | `$counter`, `{$counter: {start: 1, step: 1}}` | the message's number (from 0 by default) |
//! | `$timestamp`, `$timestamp.ms` | now, as RFC 3339 UTC with milliseconds, or Unix milliseconds |
//! | `$uuid` | a random UUID (v4, from the device's seed) |
//! | `{$uniform: {min, max, decimals}}` | a uniform draw in [min, max) |
//! | `{$normal: {mean, stddev, min, max, decimals}}` | a normal draw, clamped to [min, max] if given |
//! | `{$walk: {min, max, step, drift, start, decimals}}` | a random walk kept per device: each message moves it by `drift` plus a normal step of deviation `step`, clamped to [min, max]; it starts at `start` or at a uniform draw |
//! | `{$choice: {open: 1, closed: 9}}` | one of the keys, with the weights' odds |
//! | `{$bool: 5%}` | `true` with that probability |
//! | `{$text: 100}` | that many random lowercase letters (filler of a known size) |
//! | `{$repeat: {count: 50, item: ...}}` | an array of `count` items, each generated afresh |
//! | `{$field: a.b}` | the value of the payload's field `a.b` in this message |
//! | `{$above: {field: a.b, threshold: 30}}` | whether that field is above the threshold |
//!
//! `decimals` rounds a number (0: an integer). A string or key that really starts with `$` is
//! written `$$...`. Templates are checked while the scenario is read, so a mistake is an error
//! with the line and column of the generator; references (`$field`, `$above`) are checked once
//! the whole telemetry section is known ([`super::telemetry`]).
//!
//! The model only: generation, with per-device state, lives in `device::telemetry`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::Spanned;

pub use super::generators::{
    Above, Choice, Counter, FieldRef, Normal, Probability, Text, Uniform, Walk,
};
use super::generators::{AboveSpec, Check, Checked, PathSpec};

/// A template: a JSON value with generators in it.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    /// Keys in the order written.
    Object(Vec<(String, Node)>),
    Gen(Generator),
}

/// A generated value.
#[derive(Debug, Clone, PartialEq)]
pub enum Generator {
    DeviceId,
    DeviceCohort,
    DeviceIndex,
    Counter(Counter),
    Timestamp,
    TimestampMs,
    Uuid,
    Uniform(Uniform),
    Normal(Normal),
    Walk(Walk),
    Choice(Choice),
    Bool(Probability),
    Text(Text),
    Repeat(Repeat),
    Field(FieldRef),
    Above(Above),
}

/// The generators written as a plain string, and their names.
const STRING_GENERATORS: [(&str, Generator); 7] = [
    ("$device.id", Generator::DeviceId),
    ("$device.cohort", Generator::DeviceCohort),
    ("$device.index", Generator::DeviceIndex),
    (
        "$counter",
        Generator::Counter(Counter { start: 0, step: 1 }),
    ),
    ("$timestamp", Generator::Timestamp),
    ("$timestamp.ms", Generator::TimestampMs),
    ("$uuid", Generator::Uuid),
];

const MAPPING_GENERATORS: &str = "$counter, $uniform, $normal, $walk, $choice, $bool, $text, \
                                  $repeat, $field, $above";

/// The most items one `$repeat` makes.
pub const MAX_REPEAT: u32 = 10_000;

/// `{$repeat: {count, item}}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// How many items (1 to 10,000).
    pub count: u32,
    /// The template of each item, generated afresh.
    pub item: Box<Node>,
}

impl Check for Repeat {
    fn check(&self) -> Result<(), String> {
        match (1..=MAX_REPEAT).contains(&self.count) {
            true => Ok(()),
            false => Err(format!(
                "$repeat: count must be 1 to {MAX_REPEAT}, not {}",
                self.count
            )),
        }
    }
}

impl JsonSchema for Node {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let string_generators = STRING_GENERATORS
            .iter()
            .map(|(name, _)| name[1..].replace('.', r"\."))
            .collect::<Vec<_>>()
            .join("|");
        let one_key = |key: &str, value: Schema| {
            json_schema!({
                "type": "object",
                "properties": {key: value},
                "required": [key],
                "additionalProperties": false,
            })
        };
        let generators = [
            one_key("$counter", generator.subschema_for::<Counter>()),
            one_key("$uniform", generator.subschema_for::<Uniform>()),
            one_key("$normal", generator.subschema_for::<Normal>()),
            one_key("$walk", generator.subschema_for::<Walk>()),
            one_key("$choice", generator.subschema_for::<Choice>()),
            one_key("$bool", generator.subschema_for::<Probability>()),
            one_key("$text", json_schema!({"type": "integer", "minimum": 1})),
            one_key("$repeat", generator.subschema_for::<Repeat>()),
            one_key(
                "$field",
                json_schema!({"type": "string", "description": "a.b"}),
            ),
            one_key("$above", generator.subschema_for::<AboveSpec>()),
        ];
        let node = generator.subschema_for::<Node>();
        // A key or string that starts with `$` is a generator unless written `$$`.
        let plain = r"^(?:[^$]|\$\$|$)";
        let mut branches = vec![
            json_schema!({"type": ["null", "boolean", "number"]}),
            json_schema!({
                "type": "string",
                "pattern": format!(r"^(?:[^$]|\$\$|\$(?:{string_generators})$|$)"),
            }),
            json_schema!({"type": "array", "items": node}),
            json_schema!({
                "type": "object",
                "propertyNames": {"pattern": plain},
                "additionalProperties": node,
            }),
        ];
        branches.extend(generators);
        json_schema!({
            "description": "A JSON value written in YAML, in which a string such as $device.id, \
                            $counter, $timestamp, $timestamp.ms or $uuid, or a mapping with one \
                            key such as {$uniform: {min: 20, max: 35, decimals: 2}}, is a \
                            generator; write $$ for a text or key that starts with $.",
            "anyOf": branches,
        })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value or a generator ($device.id, {$uniform: {min: 0, max: 1}}, ...)")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom("JSON has no infinite or NaN numbers"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        if let Some(literal) = v.strip_prefix("$$") {
            return Ok(Node::String(format!("${literal}")));
        }
        if !v.starts_with('$') {
            return Ok(Node::String(v.to_string()));
        }
        match STRING_GENERATORS.iter().find(|(name, _)| *name == v) {
            Some((_, g)) => Ok(Node::Gen(g.clone())),
            None => Err(E::custom(format!(
                "unknown generator {v:?}: expected one of {}, or a mapping such as \
                 {{$uniform: {{min: 0, max: 1}}}} ({MAPPING_GENERATORS}); write $${} for a \
                 string that starts with $",
                STRING_GENERATORS.map(|(n, _)| n).join(", "),
                &v[1..]
            ))),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.starts_with('$') && !key.starts_with("$$") {
                if !entries.is_empty() {
                    return Err(one_key(&key));
                }
                let generator = generator(&key, &mut map)?;
                if map.next_key::<String>()?.is_some() {
                    return Err(one_key(&key));
                }
                return Ok(Node::Gen(generator));
            }
            let key = match key.strip_prefix("$$") {
                Some(rest) => format!("${rest}"),
                None => key,
            };
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Object(entries))
    }
}

fn one_key<E: de::Error>(key: &str) -> E {
    E::custom(format!(
        "a generator ({key}) is a mapping with that one key; write $${} for a key that starts \
         with $",
        &key[1..]
    ))
}

/// Reads a `T` and checks it.
fn read<'de, T: Deserialize<'de> + Check, A: MapAccess<'de>>(map: &mut A) -> Result<T, A::Error> {
    Ok(map.next_value::<Checked<T>>()?.0)
}

/// The generator `key` names, with its value read from `map`.
fn generator<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Generator, A::Error> {
    Ok(match key {
        "$counter" => Generator::Counter(read(map)?),
        "$uniform" => Generator::Uniform(read(map)?),
        "$normal" => Generator::Normal(read(map)?),
        "$walk" => Generator::Walk(read(map)?),
        "$choice" => Generator::Choice(read(map)?),
        "$bool" => Generator::Bool(read(map)?),
        "$text" => Generator::Text(read(map)?),
        "$repeat" => Generator::Repeat(read(map)?),
        "$field" => {
            let spec: Spanned<Checked<PathSpec>> = map.next_value()?;
            Generator::Field(FieldRef {
                path: spec.value.0.0,
                at: spec.referenced,
            })
        }
        "$above" => {
            let spec: Spanned<Checked<AboveSpec>> = map.next_value()?;
            let above = spec.value.0;
            Generator::Above(Above {
                field: FieldRef {
                    path: above.field,
                    at: spec.referenced,
                },
                threshold: above.threshold,
            })
        }
        other => {
            return Err(de::Error::custom(format!(
                "unknown generator {other}: expected one of {MAPPING_GENERATORS}; write $${} \
                 for a key that starts with $",
                &other[1..]
            )));
        }
    })
}

/// Escapes a string that starts with `$` the way it is written.
fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    match s.starts_with('$') {
        true => format!("${s}").into(),
        false => s.into(),
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::String(v) => s.serialize_str(&escaped(v)),
            Node::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(&escaped(k), v)?;
                }
                m.end()
            }
            Node::Gen(g) => g.serialize(s),
        }
    }
}

impl Serialize for Generator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some((name, _)) = STRING_GENERATORS.iter().find(|(_, g)| g == self) {
            return s.serialize_str(name);
        }
        let mut m = s.serialize_map(Some(1))?;
        match self {
            Generator::Counter(c) => m.serialize_entry("$counter", c)?,
            Generator::Uniform(u) => m.serialize_entry("$uniform", u)?,
            Generator::Normal(n) => m.serialize_entry("$normal", n)?,
            Generator::Walk(w) => m.serialize_entry("$walk", w)?,
            Generator::Choice(c) => m.serialize_entry("$choice", c)?,
            Generator::Bool(p) => m.serialize_entry("$bool", p)?,
            Generator::Text(t) => m.serialize_entry("$text", t)?,
            Generator::Repeat(r) => m.serialize_entry("$repeat", r)?,
            Generator::Field(f) => m.serialize_entry("$field", &f.path)?,
            Generator::Above(a) => m.serialize_entry(
                "$above",
                &AboveSpec {
                    field: a.field.path.clone(),
                    threshold: a.threshold,
                },
            )?,
            // The string generators returned above.
            _ => {}
        }
        m.end()
    }
}

impl Node {
    /// The node at the dotted `path` from here, through objects only.
    pub fn at_path(&self, path: &str) -> Option<&Node> {
        path.split('.').try_fold(self, |node, key| match node {
            Node::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        })
    }

    /// Every node of the tree, depth first in document order, with whether it lies inside a
    /// `$repeat`.
    pub fn walk(&self, inside_repeat: bool, visit: &mut dyn FnMut(&Node, bool)) {
        visit(self, inside_repeat);
        match self {
            Node::Array(items) => items.iter().for_each(|i| i.walk(inside_repeat, visit)),
            Node::Object(entries) => entries
                .iter()
                .for_each(|(_, v)| v.walk(inside_repeat, visit)),
            Node::Gen(Generator::Repeat(r)) => r.item.walk(true, visit),
            _ => {}
        }
    }

    /// Whether this node yields a scalar (what a property, `$field` or `$above` can use).
    pub fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Node::Array(_) | Node::Object(_) | Node::Gen(Generator::Repeat(_))
        )
    }

    /// Whether this node yields a number (what `$above` compares).
    pub fn is_number(&self) -> bool {
        use Generator::*;
        match self {
            Node::Number(_) => true,
            Node::Gen(g) => matches!(
                g,
                DeviceIndex | Counter(_) | TimestampMs | Uniform(_) | Normal(_) | Walk(_)
            ),
            _ => false,
        }
    }
}
