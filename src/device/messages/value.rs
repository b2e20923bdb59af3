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
        Value::Float(x, Some(d)) => Some(match scaled(*x, *d) {
            Some(n) => n as f64 / POWERS[usize::from(*d)] as f64,
            None => format!("{x:.*}", usize::from(*d)).parse().ok()?,
        }),
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
        Value::Float(x, Some(d)) => write_fixed(out, *x, *d),
        Value::Float(x, None) => write!(out, "{x}"),
        Value::Str(_) | Value::Null => Ok(()),
    };
}

/// 10^d for the decimals a template may ask for.
const POWERS: [i64; 13] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
];

/// `x` × 10^d rounded to an integer, when that is exact in an f64 (under 2^53).
fn scaled(x: f64, d: u8) -> Option<i64> {
    let power = *POWERS.get(usize::from(d))? as f64;
    let n = (x * power).round();
    (n.abs() < 9_007_199_254_740_992.0).then_some(n as i64)
}

/// Writes `x` rounded to `d` decimals: integer arithmetic, several times cheaper than the
/// formatter's exact decimal expansion (rounding `x × 10^d` half away from zero; the exact
/// expansion differs only for values a hair off a half, which a sensor reading never notices).
fn write_fixed(out: &mut String, x: f64, d: u8) -> std::fmt::Result {
    let Some(n) = scaled(x, d) else {
        return write!(out, "{x:.*}", usize::from(d));
    };
    if d == 0 {
        return write!(out, "{n}");
    }
    let power = POWERS[usize::from(d)];
    let (whole, fraction) = (
        n.unsigned_abs() / power as u64,
        n.unsigned_abs() % power as u64,
    );
    let sign = if n < 0 { "-" } else { "" };
    write!(
        out,
        "{sign}{whole}.{fraction:0width$}",
        width = usize::from(d)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_numbers_are_written_and_read_alike() {
        for (x, d, text) in [
            (21.456, 2, "21.46"),
            (-0.004, 2, "0.00"),
            (-4.12345, 3, "-4.123"),
            (7.0, 1, "7.0"),
            (19.5, 0, "20"),
            (0.05, 1, "0.1"),
            (1e300, 2, ""),
        ] {
            let mut out = String::new();
            write_fixed(&mut out, x, d).unwrap();
            if text.is_empty() {
                assert_eq!(
                    out,
                    format!("{x:.2}"),
                    "beyond 2^53 the formatter writes it"
                );
                continue;
            }
            assert_eq!(out, text, "{x} to {d}");
            assert_eq!(
                number(&Value::Float(x, Some(d))),
                Some(text.parse().unwrap())
            );
        }
    }
}
