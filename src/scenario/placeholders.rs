//! Placeholders in the JSON a device sends back to the cloud (`behaviour`: reported properties,
//! method answers): a string value may name `{device_id}`, `{index}` (the device's number in
//! the fleet), `{connects}` (how many times it has connected, this connection included) and, in
//! a method's answer, `{method}` (its name) and `{request}` (the request's payload). A string
//! that is only one placeholder takes the value's own type (`"{index}"` is a number,
//! `"{request}"` the request's JSON); inside longer text values are written out (JSON compactly).
//!
//! Checked when the scenario loads ([`check`]), filled in per device ([`render`]).

use serde_json::Value;

/// Where placeholders are used: which ones exist there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reported properties: `device_id`, `index`, `connects`.
    Reported,
    /// A method's answer: those and `method`, `request`.
    MethodAnswer,
}

impl Scope {
    fn names(self) -> &'static [&'static str] {
        match self {
            Scope::Reported => &["device_id", "index", "connects"],
            Scope::MethodAnswer => &["device_id", "index", "connects", "method", "request"],
        }
    }
}

/// What placeholders stand for, for one device at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub device_id: &'a str,
    pub index: u64,
    pub connects: u64,
    pub method: Option<&'a str>,
    pub request: Option<&'a Value>,
}

/// The placeholders (`{name}`, a lower-case identifier in braces) in `text`, with where each
/// starts and ends.
fn placeholders(text: &str) -> impl Iterator<Item = (usize, usize, &str)> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(open) = text[at..].find('{').map(|i| i + at) {
            let name_len = bytes[open + 1..]
                .iter()
                .take_while(|b| b.is_ascii_lowercase() || **b == b'_')
                .count();
            let close = open + 1 + name_len;
            at = open + 1;
            if name_len > 0 && bytes.get(close) == Some(&b'}') {
                at = close + 1;
                return Some((open, close + 1, &text[open + 1..close]));
            }
        }
        None
    })
}

/// Checks that every placeholder in `value` exists in `scope`.
pub fn check(value: &Value, scope: Scope) -> Result<(), String> {
    match value {
        Value::String(s) => {
            for (_, _, name) in placeholders(s) {
                if !scope.names().contains(&name) {
                    let known: Vec<String> =
                        scope.names().iter().map(|n| format!("{{{n}}}")).collect();
                    return Err(format!(
                        "unknown placeholder {{{name}}} in {s:?}: expected one of {}",
                        known.join(", ")
                    ));
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check(v, scope)),
        Value::Object(map) => map.values().try_for_each(|v| check(v, scope)),
        _ => Ok(()),
    }
}

/// The value a placeholder stands for (`Null` for one with nothing to stand for here).
fn lookup(name: &str, vars: &Vars) -> Value {
    match name {
        "device_id" => Value::from(vars.device_id),
        "index" => Value::from(vars.index),
        "connects" => Value::from(vars.connects),
        "method" => vars.method.map_or(Value::Null, Value::from),
        "request" => vars.request.cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// `value` with its placeholders filled in.
pub fn render(value: &Value, vars: &Vars) -> Value {
    match value {
        Value::String(s) => render_text(s, vars),
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn render_text(s: &str, vars: &Vars) -> Value {
    let mut found = placeholders(s).peekable();
    let Some(&(first_start, first_end, first)) = found.peek() else {
        return Value::String(s.to_string());
    };
    if first_start == 0 && first_end == s.len() {
        return lookup(first, vars);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut copied = 0;
    for (start, end, name) in found {
        out.push_str(&s[copied..start]);
        match lookup(name, vars) {
            Value::String(text) => out.push_str(&text),
            Value::Null => {}
            other => out.push_str(&other.to_string()),
        }
        copied = end;
    }
    out.push_str(&s[copied..]);
    Value::String(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_fill_in_with_their_types() {
        let request = json!({"delay": 5});
        let vars = Vars {
            device_id: "sim-7",
            index: 7,
            connects: 2,
            method: Some("reboot"),
            request: Some(&request),
        };
        let template = json!({
            "id": "{device_id}",
            "n": "{index}",
            "boot": "{connects}",
            "echo": "{request}",
            "text": "{method} of {device_id} (#{index}) with {request}",
            "list": ["{index}", 1, null, "{notaplaceholder"],
            "braces": "{ } {X} {}",
        });
        let out = render(&template, &vars);
        assert_eq!(out["id"], "sim-7");
        assert_eq!(out["n"], 7);
        assert_eq!(out["boot"], 2);
        assert_eq!(out["echo"], request);
        assert_eq!(out["text"], "reboot of sim-7 (#7) with {\"delay\":5}");
        assert_eq!(out["list"], json!([7, 1, null, "{notaplaceholder"]));
        assert_eq!(out["braces"], "{ } {X} {}");
    }

    #[test]
    fn unknown_placeholders_are_refused_where_they_are_used() {
        assert!(check(&json!({"a": ["{index}"]}), Scope::Reported).is_ok());
        let err = check(&json!({"a": "{request}"}), Scope::Reported).unwrap_err();
        assert!(
            err.contains("{request}") && err.contains("{device_id}"),
            "{err}"
        );
        assert!(check(&json!({"a": "{request}"}), Scope::MethodAnswer).is_ok());
        assert!(check(&json!("{firmware}"), Scope::MethodAnswer).is_err());
    }
}
