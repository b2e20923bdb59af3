//! The JSON Schema of the scenario format, for editors (VS Code's YAML extension, JetBrains,
//! `yaml-language-server`): key completion, each key's documentation on hover, mistakes flagged
//! while typing.
//!
//! It is generated from the same types that parse scenarios (`schemars` derives, which follow the
//! serde attributes: `deny_unknown_fields` becomes `additionalProperties: false`, enums list
//! their values, doc comments become descriptions). Types with a hand-written `Deserialize`
//! (units, sizes, delays, templates, thresholds…) write their schema by hand next to it, as a
//! pattern or a small union. The schema is draft-07, the draft every editor plugin supports.
//!
//! What a schema cannot say (cross-field rules such as "arrival or arrival_rate", bounds of a
//! unit) stays with [`super::parse`]; the schema accepts a superset of what `validate` accepts,
//! never less.

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::Scenario;

/// The file name the shipped scenarios point at (`# yaml-language-server: $schema=./…`).
pub const FILE_NAME: &str = "fleetsim.schema.json";

/// The first line of every shipped scenario and `fleetsim init` template: tells
/// `yaml-language-server` where the schema is.
pub const MODELINE: &str = "# yaml-language-server: $schema=./fleetsim.schema.json";

/// The scenario format's JSON Schema (draft-07).
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<Scenario>();
    schema.insert("title".into(), "fleetsim scenario".into());
    schema.to_value()
}

/// [`json_schema`] as `fleetsim schema` prints it and `scenarios/fleetsim.schema.json` holds it:
/// pretty JSON ending in a newline.
pub fn to_pretty_json() -> String {
    // Serialising a `Value` cannot fail (its keys are strings).
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object schema with `properties` in the document, with its path.
    fn objects<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
        match value {
            Value::Object(map) => {
                // A schema of an object (not a `properties` map that has a key named so).
                if map.get("type") == Some(&Value::from("object")) && map.contains_key("properties")
                {
                    out.push((path.clone(), value));
                }
                for (k, v) in map {
                    objects(v, format!("{path}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    objects(v, format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_key_has_a_description_and_unknown_keys_are_denied() {
        let schema = json_schema();
        let mut found = Vec::new();
        objects(&schema, String::new(), &mut found);
        assert!(found.len() > 30, "only {} objects", found.len());
        let mut undocumented = Vec::new();
        for (path, object) in &found {
            assert_eq!(
                object.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{path} allows unknown keys, but the parser denies them"
            );
            let properties = object["properties"].as_object().unwrap();
            for (key, property) in properties {
                // Generator mappings (`{$uniform: …}`) are described by the template's schema.
                // An enum's variant (`embedded:`, `client-secret:`) is described by its branch.
                let variant = properties.len() == 1 && object.get("description").is_some();
                let described =
                    property.get("description").is_some() || key.starts_with('$') || variant;
                if !described {
                    undocumented.push(format!("{path}/properties/{key}"));
                }
            }
        }
        assert!(
            undocumented.is_empty(),
            "give these scenario fields a /// doc comment (editors show it on hover), then \
             regenerate the schema (cargo run -q -- schema --out scenarios/fleetsim.schema.json): \
             {undocumented:#?}"
        );
    }

    #[test]
    fn units_and_enums_are_spelt_out() {
        let schema = json_schema();
        let definitions = &schema["definitions"];
        for unit in ["Duration", "Rate", "Percent"] {
            assert!(definitions[unit]["pattern"].is_string(), "{unit}");
        }
        let key = definitions["KeyKind"].to_string();
        for kind in ["p256", "p384", "rsa-2048", "rsa-3072", "rsa-4096"] {
            assert!(key.contains(kind), "{kind} missing from {key}");
        }
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    }
}
