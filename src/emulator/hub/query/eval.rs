//! Evaluates a condition against a twin document, three-valued: `Some(true)`, `Some(false)`, or
//! `None` (undefined: a missing member, or operands of different types).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::syntax::{Condition, Op, Operand, Query};

/// What a query runs against: the member at a path of a twin document.
pub trait Document {
    /// The member at `path` (names match case-sensitively, as twin keys do), if there is one.
    fn member(&self, path: &[String]) -> Option<Cow<'_, Value>>;
}

impl Document for Value {
    fn member(&self, path: &[String]) -> Option<Cow<'_, Value>> {
        path.iter()
            .try_fold(self, |v, name| v.as_object()?.get(name))
            .map(Cow::Borrowed)
    }
}

impl Query {
    /// Whether the twin document `twin` is selected.
    pub fn selects(&self, twin: &dyn Document) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|c| condition(c, twin) == Some(true))
    }
}

fn condition(c: &Condition, twin: &dyn Document) -> Option<bool> {
    match c {
        Condition::And(a, b) => match (condition(a, twin), condition(b, twin)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Condition::Or(a, b) => match (condition(a, twin), condition(b, twin)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Condition::Not(inner) => condition(inner, twin).map(|b| !b),
        Condition::Compare(left, op, right) => {
            let (left, right) = (operand(left, twin)?, operand(right, twin)?);
            compare(&left, *op, &right)
        }
        Condition::In {
            operand: o,
            list,
            negated,
        } => {
            let value = operand(o, twin)?;
            let found = list
                .iter()
                .any(|v| compare(&value, Op::Eq, v) == Some(true));
            Some(found != *negated)
        }
        Condition::IsDefined(path) => Some(twin.member(path).is_some()),
        Condition::StartsWith(path, prefix) => twin
            .member(path)?
            .as_str()
            .map(|s| s.starts_with(prefix.as_str())),
        Condition::EndsWith(path, suffix) => twin
            .member(path)?
            .as_str()
            .map(|s| s.ends_with(suffix.as_str())),
    }
}

fn operand<'a>(o: &'a Operand, twin: &'a dyn Document) -> Option<Cow<'a, Value>> {
    match o {
        Operand::Literal(v) => Some(Cow::Borrowed(v)),
        Operand::Path(path) => twin.member(path),
    }
}

/// Compares two values of the same type; `None` for different types, and for ordering booleans,
/// nulls, objects or arrays.
fn compare(a: &Value, op: Op, b: &Value) -> Option<bool> {
    let ordering = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?)?,
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(_), Value::Bool(_))
        | (Value::Null, Value::Null)
        | (Value::Object(_), Value::Object(_))
        | (Value::Array(_), Value::Array(_)) => {
            return match op {
                Op::Eq => Some(a == b),
                Op::Ne => Some(a != b),
                _ => None,
            };
        }
        _ => return None,
    };
    Some(match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
    })
}
