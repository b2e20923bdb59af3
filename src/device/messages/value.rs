//! A generated (or constant) scalar and how it is written: as JSON in a payload, as text in a
//! property. A leaf: `program` and `eval` both import it.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A generated (or constant) scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// A number and the decimals it is rounded to when written.
    Float(f64, Option<u8>),
    Str(Cow<'a, str>),
}

impl Value<'_> {
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(f, d) => Value::Float(f, d),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        }
    }
}

/// A number as written (rounded to its decimals), for comparisons.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x, None) => Some(*x),
        Value::Float(x, Some(d)) => format!("{x:.*}", usize::from(*d)).parse().ok(),
        _ => None,
    }
}

/// Writes `v` as JSON.
pub fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => write_json_str(out, s),
        Value::Null => out.push_str("null"),
        other => write_scalar(out, other),
    }
}

/// The text of `v` in a property (strings as they are, `null` as empty).
pub fn text(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Null => {}
        other => write_scalar(&mut out, other),
    }
    out
}

fn write_scalar(out: &mut String, v: &Value) {
    let _ = match v {
        Value::Bool(b) => write!(out, "{b}"),
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(x, Some(d)) => write!(out, "{x:.*}", usize::from(*d)),
        Value::Float(x, None) => write!(out, "{x}"),
        Value::Str(_) | Value::Null => Ok(()),
    };
}

/// Writes `s` as a JSON string literal.
pub fn write_json_str(out: &mut String, s: &str) {
    let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json escapes exactly as JSON requires; strings that need it are rare.
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}
