//! The query language (unit tests): what parses into what, what selects which twins, where errors point, and
//! that no input makes the parser panic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::*;

fn twin(id: &str, status: &str, connected: bool, tags: Value, reported: Value) -> Value {
    json!({
        "deviceId": id,
        "status": status,
        "connectionState": if connected { "Connected" } else { "Disconnected" },
        "tags": tags,
        "properties": {
            "desired": {"telemetryInterval": 10, "$version": 2},
            "reported": reported,
        },
    })
}

fn fleet() -> Vec<Value> {
    vec![
        twin(
            "a-1",
            "enabled",
            true,
            json!({"site": "oslo", "floor": 1}),
            json!({"fw": "1.0", "temp": 20.5}),
        ),
        twin(
            "a-2",
            "enabled",
            false,
            json!({"site": "oslo", "floor": 3}),
            json!({"fw": "1.1"}),
        ),
        twin(
            "b-1",
            "disabled",
            false,
            json!({"site": "rome"}),
            json!({"fw": "1.1", "ok": true}),
        ),
        twin("b-2", "enabled", true, json!({}), json!({"fw": null})),
    ]
}

/// The device ids `text` selects from [`fleet`].
fn select(text: &str) -> Vec<String> {
    let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    fleet()
        .iter()
        .filter(|t| q.selects(*t))
        .map(|t| t["deviceId"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn selections_and_collections() {
    let q = parse("select * from DEVICES").unwrap();
    assert_eq!((q.selection, q.condition), (Selection::All, None));
    let q = parse("SELECT COUNT() AS n FROM devices WHERE status = 'enabled'").unwrap();
    assert_eq!(q.selection, Selection::Count { alias: "n".into() });
    assert!(q.condition.is_some());
    assert_eq!(select("SELECT * FROM devices").len(), 4);
}

#[test]
fn comparisons_select_the_right_twins() {
    let cases: &[(&str, &[&str])] = &[
        ("deviceId = 'a-1'", &["a-1"]),
        ("status != 'enabled'", &["b-1"]),
        ("status <> 'disabled'", &["a-1", "a-2", "b-2"]),
        ("connectionState = 'Connected'", &["a-1", "b-2"]),
        ("tags.site = \"oslo\"", &["a-1", "a-2"]),
        ("tags.floor > 1", &["a-2"]),
        ("tags.floor >= 1", &["a-1", "a-2"]),
        ("tags.floor < 3", &["a-1"]),
        ("tags.floor <= 3.0", &["a-1", "a-2"]),
        ("properties.reported.temp > 20", &["a-1"]),
        (
            "properties.reported.fw = '1.1' AND status = 'enabled'",
            &["a-2"],
        ),
        (
            "properties.reported.fw = '1.0' OR tags.site = 'rome'",
            &["a-1", "b-1"],
        ),
        ("NOT (tags.site = 'oslo')", &["b-1"]),
        ("deviceId IN ['a-1', 'b-2', 'zz']", &["a-1", "b-2"]),
        ("deviceId NOT IN ['a-1', 'b-2']", &["a-2", "b-1"]),
        ("deviceId NIN ['a-1']", &["a-2", "b-1", "b-2"]),
        ("properties.reported.ok = true", &["b-1"]),
        ("properties.reported.fw = null", &["b-2"]),
        (
            "properties.desired.telemetryInterval = 10",
            &["a-1", "a-2", "b-1", "b-2"],
        ),
        ("IS_DEFINED(tags.floor)", &["a-1", "a-2"]),
        ("NOT IS_DEFINED(tags.site)", &["b-2"]),
        ("STARTSWITH(deviceId, 'b-')", &["b-1", "b-2"]),
        ("endswith(deviceId, '-2')", &["a-2", "b-2"]),
        (
            "(status = 'enabled' OR status = 'disabled') AND NOT deviceId = 'a-1'",
            &["a-2", "b-1", "b-2"],
        ),
        (
            "status = 'enabled' AND (tags.floor = 1 OR tags.floor = 3)",
            &["a-1", "a-2"],
        ),
    ];
    for (condition, expected) in cases {
        let text = format!("SELECT * FROM devices WHERE {condition}");
        assert_eq!(select(&text), *expected, "{condition}");
    }
}

#[test]
fn missing_members_and_mixed_types_are_undefined() {
    // A missing member neither equals nor differs from anything, and NOT keeps it undefined.
    assert_eq!(
        select("SELECT * FROM devices WHERE tags.floor != 1"),
        ["a-2"]
    );
    assert!(select("SELECT * FROM devices WHERE NOT tags.floor = 7").len() == 2);
    // Different types compare as undefined, even with !=.
    assert!(select("SELECT * FROM devices WHERE tags.floor = '1'").is_empty());
    assert!(select("SELECT * FROM devices WHERE tags.site != 1").is_empty());
    // OR with one side true is true even when the other is undefined.
    assert_eq!(
        select("SELECT * FROM devices WHERE tags.floor = 9 OR deviceId = 'b-2'"),
        ["b-2"]
    );
}

#[test]
fn errors_name_the_column() {
    let cases = [
        ("SELEKT * FROM devices", 1, "expected SELECT"),
        ("SELECT * FROM devices WHERE", 28, "found the end"),
        ("SELECT * FROM devices WHERE status = ", 38, "found the end"),
        ("SELECT * FROM devices WHERE status == 'x'", 37, "'='"),
        (
            "SELECT deviceId FROM devices",
            8,
            "projections are not supported",
        ),
        (
            "SELECT * FROM devices.jobs",
            15,
            "only the collection 'devices'",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = 'open",
            38,
            "unterminated string",
        ),
        (
            "SELECT * FROM devices WHERE x IN [1, y]",
            38,
            "literal in the list",
        ),
        ("SELECT * FROM devices WHERE (x = 1", 35, "expected ')'"),
        (
            "SELECT * FROM devices WHERE x ~ 1",
            31,
            "unexpected character",
        ),
        ("SELECT * FROM devices LIMIT 5", 23, "unexpected 'LIMIT'"),
        ("SELECT * FROM devices WHERE x = 1.2.3", 33, "not a number"),
    ];
    for (text, column, message) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!(e.column, column, "{text}: {e}");
        assert!(e.to_string().contains(message), "{text}: {e}");
    }
}

#[test]
fn limits_on_length_and_nesting() {
    let long = format!(
        "SELECT * FROM devices WHERE deviceId = '{}'",
        "x".repeat(MAX_QUERY_CHARS)
    );
    assert!(parse(&long).is_err());
    let deep = format!(
        "SELECT * FROM devices WHERE {}x = 1{}",
        "(".repeat(200),
        ")".repeat(200)
    );
    assert!(parse(&deep).unwrap_err().message.contains("nest deeper"));
    let nots = format!("SELECT * FROM devices WHERE {}x = 1", "NOT ".repeat(200));
    assert!(parse(&nots).is_err());
    let fine = format!(
        "SELECT * FROM devices WHERE {}x = 1{}",
        "(".repeat(20),
        ")".repeat(20)
    );
    assert!(parse(&fine).is_ok());
}

/// Random text, and random runs of the language's own tokens, never panic: each parses or is an
/// error whose column lies within the text (or just past it).
#[test]
fn random_input_never_panics() {
    let pieces = [
        "SELECT",
        "*",
        "FROM",
        "devices",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "NIN",
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "=",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "'s'",
        "\"t\"",
        "1",
        "-2.5e3",
        "true",
        "null",
        "tags",
        "x",
        "COUNT",
        "AS",
        "IS_DEFINED",
        "STARTSWITH",
        "'",
        "\\",
        "é",
        "\u{0}",
    ];
    let mut rng = StdRng::seed_from_u64(12);
    for round in 0..20_000 {
        let text: String = if round % 2 == 0 {
            let len = rng.random_range(0..40);
            (0..len).map(|_| rng.random_range(' '..='~')).collect()
        } else {
            let len = rng.random_range(0..30);
            let mut t = String::from("SELECT * FROM devices WHERE ");
            for _ in 0..len {
                t.push_str(pieces[rng.random_range(0..pieces.len())]);
                t.push(' ');
            }
            t
        };
        if let Err(e) = parse(&text) {
            assert!(
                (1..=text.chars().count() + 1).contains(&e.column),
                "{text:?}: {e}"
            );
        }
    }
}
