//! The scenario format's JSON Schema as editors use it: the committed copy
//! (`scenarios/fleetsim.schema.json`) is the one the scenario types generate, every shipped
//! scenario and `init` template points at it and passes it, and it catches the mistakes an author
//! makes while typing (a misspelt key, a wrong unit, a value outside an enum), checked by an
//! independent validator: Python's `jsonschema`, from the peers' virtualenv.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetsim::scenario::schema::{self, MODELINE};
use fleetsim::scenario::templates::TEMPLATES;

use crate::common::{python, scratch_dir};

const REGENERATE: &str = "cargo run -q -- schema --out scenarios/fleetsim.schema.json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_scenarios() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() > 10, "{paths:?}");
    paths
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let committed =
        std::fs::read_to_string(repo().join("scenarios/fleetsim.schema.json")).unwrap_or_default();
    // Not assert_eq: a diff of 3,000 lines helps nobody; the command does.
    assert!(
        committed == schema::to_pretty_json(),
        "scenarios/fleetsim.schema.json differs from the schema the scenario types generate \
         (a field was added or changed): regenerate it with `{REGENERATE}` and commit it"
    );
}

#[test]
fn every_shipped_scenario_points_at_the_schema() {
    for path in shipped_scenarios() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(MODELINE),
            "{}: the first line tells editors where the schema is",
            path.display()
        );
    }
}

/// Runs the validator over `documents` (name, YAML text); the errors of each, as
/// `path: message` lines.
fn validate(test: &str, documents: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let dir = scratch_dir(test);
    let mut files = Vec::new();
    for (i, (name, yaml)) in documents.iter().enumerate() {
        // The YAML as fleetsim's own parser reads it (YAML 1.2, as yaml-language-server does).
        let value: serde_json::Value =
            serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, serde_json::to_vec(&value).unwrap()).unwrap();
        files.push(file);
    }
    let output = Command::new(python())
        .arg("-c")
        .arg(VALIDATOR)
        .arg(repo().join("scenarios/fleetsim.schema.json"))
        .args(&files)
        .output()
        .expect("python runs");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        output.status.success(),
        "the validator failed (./scripts/test installs jsonschema): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Vec<String>> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), documents.len());
    documents
        .iter()
        .map(|(name, _)| name.clone())
        .zip(lines)
        .collect()
}

/// Checks the schema itself against draft-07's metaschema, then prints one JSON line per
/// document: its errors, each `path: message`.
const VALIDATOR: &str = r#"
import json, sys
from jsonschema import Draft7Validator
schema = json.load(open(sys.argv[1]))
Draft7Validator.check_schema(schema)
validator = Draft7Validator(schema)
for name in sys.argv[2:]:
    errors = validator.iter_errors(json.load(open(name)))
    print(json.dumps(["/".join(map(str, e.absolute_path)) + ": " + e.message for e in errors]))
"#;

#[test]
fn the_schema_accepts_every_shipped_scenario_and_template() {
    let mut documents: Vec<(String, String)> = shipped_scenarios()
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect();
    for t in TEMPLATES {
        documents.push((format!("template {}", t.name), t.scenario_text()));
    }
    for (name, errors) in validate("schema-shipped", &documents) {
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

#[test]
fn the_schema_flags_a_misspelt_key_a_wrong_unit_and_a_wrong_enum_value() {
    let good = "name: s\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 10\n  \
                arrival_rate: 5/s\ncertificate:\n  key: p256\n  swap: make-before-break\n";
    let cases = [
        ("good", good.to_string(), ""),
        (
            "misspelt key",
            good.replace("  devices: 10", "  devcies: 10"),
            "fleet: Additional properties are not allowed ('devcies' was unexpected)",
        ),
        (
            "wrong unit",
            good.replace("duration: 30s", "duration: 30 parsecs"),
            "duration: '30 parsecs' does not match",
        ),
        (
            "rate without its unit",
            good.replace("arrival_rate: 5/s", "arrival_rate: 5/fortnight"),
            "fleet/arrival_rate: '5/fortnight' is not valid",
        ),
        (
            "wrong enum value",
            good.replace("key: p256", "key: p512"),
            "certificate/key: 'p512' is not one of",
        ),
        (
            "wrong enum value (swap)",
            good.replace("make-before-break", "make-after-break"),
            "certificate/swap: 'make-after-break' is not valid under any of the given schemas",
        ),
    ];
    let documents: Vec<(String, String)> = cases
        .iter()
        .map(|(name, yaml, _)| (name.to_string(), yaml.clone()))
        .collect();
    for ((name, errors), (_, yaml, expected)) in validate("schema-mistakes", &documents)
        .into_iter()
        .zip(&cases)
    {
        // fleetsim's own parser agrees, so the schema is no stricter nor looser here.
        let parsed = fleetsim::scenario::parse(yaml, Path::new("case.yaml"));
        if expected.is_empty() {
            assert!(errors.is_empty(), "{name}: {errors:#?}");
            assert!(parsed.is_ok(), "{name}: {:?}", parsed.err());
            continue;
        }
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{name}: expected {expected:?} in {errors:#?}"
        );
        assert!(parsed.is_err(), "{name}: fleetsim accepted it");
    }
}

#[test]
fn the_gallery_has_a_line_for_every_shipped_scenario_and_template() {
    let gallery = std::fs::read_to_string(repo().join("scenarios/README.md")).unwrap();
    for path in shipped_scenarios() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = file.trim_end_matches(".yaml");
        assert!(
            gallery.contains(&format!("| [{stem}]({file}) |")),
            "scenarios/README.md has no line for {file}: add one (the question it answers, how \
             long it runs)"
        );
    }
    for t in TEMPLATES {
        assert!(
            gallery.contains(t.name),
            "scenarios/README.md: template {}",
            t.name
        );
    }
}

/// The unit patterns against the parsers, value by value: what fleetsim accepts the schema
/// accepts, and what is malformed (not merely out of bounds) it flags.
#[test]
fn the_unit_patterns_agree_with_the_parsers() {
    let scenario = |duration: &str, rate: &str, renew_at: &str, size: &str| {
        format!(
            "name: u\nduration: '{duration}'\ntarget:\n  embedded: {{}}\nfleet:\n  devices: 1\n  \
             arrival_rate: '{rate}'\ncertificate:\n  renew_at: '{renew_at}'\ntelemetry:\n  \
             payload: {{size: {size}}}\n"
        )
    };
    let ok = ("30s", "5/s", "80%", "4KB");
    let mut cases = Vec::new();
    for d in [
        "30s",
        "500ms",
        " 5 m",
        "1.5h",
        ".5d",
        "2min",
        "30",
        "30 parsecs",
        "5 s s",
        "1e3s",
    ] {
        cases.push(scenario(d, ok.1, ok.2, ok.3));
    }
    for r in [
        "50/s",
        "3000/min",
        "1 / h",
        "2.5/m",
        "50",
        "50/fortnight",
        "/s",
        "50/s/s",
    ] {
        cases.push(scenario(ok.0, r, ok.2, ok.3));
    }
    for p in ["80%", "0.5 %", "90%", "80", "80 percent", "%"] {
        cases.push(scenario(ok.0, ok.1, p, ok.3));
    }
    // Unquoted 512 is a number of bytes; the others are text.
    for s in [
        "'4KB'",
        "512",
        "'512'",
        "'512B'",
        "'1.5 kib'",
        "'0.2M'",
        "'4GB'",
        "'4 bytes'",
        "'KB'",
    ] {
        cases.push(scenario(ok.0, ok.1, ok.2, s));
    }
    let documents: Vec<(String, String)> = cases
        .iter()
        .map(|yaml| (yaml.lines().skip(1).take(1).collect(), yaml.clone()))
        .collect();
    let verdicts = validate("schema-units", &documents);
    for ((yaml, (_, errors)), (name, _)) in cases.iter().zip(verdicts).zip(&documents) {
        let parsed = fleetsim::scenario::parse(yaml, Path::new("u.yaml"));
        assert_eq!(
            parsed.is_ok(),
            errors.is_empty(),
            "{name}: fleetsim says {:?}, the schema {errors:?}\n{yaml}",
            parsed.err().map(|e| e.to_string())
        );
    }
}
