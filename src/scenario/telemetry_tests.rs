//! The telemetry section as `fleetsim validate` reads it: templates, sizes, properties and
//! schedules, and where their errors point.

use std::path::Path;

use super::*;
use crate::scenario::{ScenarioError, parse};

const HEAD: &str =
    "name: t\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 10\n  arrival_rate: 5/s\n";

/// The scenario `HEAD` + `telemetry`, parsed.
fn scenario(telemetry: &str) -> Result<crate::scenario::Scenario, ScenarioError> {
    parse(&format!("{HEAD}{telemetry}"), Path::new("s.yaml"))
}

/// The line, column and message of the error `telemetry` gives.
fn error(telemetry: &str) -> (u64, u64, String) {
    match scenario(telemetry) {
        Err(ScenarioError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn template_errors_point_at_the_generator() {
    // Line 8 is `telemetry:`.
    let (line, column, m) =
        error("telemetry:\n  payload:\n    json:\n      deviceId: $device.idd\n");
    assert_eq!((line, column), (11, 17), "{m}");
    assert!(
        m.contains("unknown generator \"$device.idd\"") && m.contains("$device.id"),
        "{m}"
    );

    let (line, column, m) = error(
        "telemetry:\n  payload:\n    json:\n      a: 1\n      t:\n        $uniform: {min: 5, max: 1}\n",
    );
    assert_eq!((line, column), (13, 19), "{m}");
    assert!(m.contains("min (5) must be below max (1)"), "{m}");

    let (line, column, m) =
        error("telemetry:\n  payload:\n    json:\n      t: {$walk: {min: 0, max: 1, stepp: 1}}\n");
    assert_eq!(line, 11, "{m}");
    assert!(m.contains("stepp") && m.contains("expected one of"), "{m}");
    assert!(column > 7, "{column}");

    let (line, _, m) = error("telemetry:\n  payload:\n    json:\n      x: {$gauss: 1}\n");
    assert_eq!(line, 11);
    assert!(
        m.contains("unknown generator $gauss") && m.contains("$normal"),
        "{m}"
    );

    let (line, _, m) = error("telemetry:\n  payload:\n    json:\n      x: {$bool: 5%, y: 1}\n");
    assert_eq!(line, 11);
    assert!(m.contains("a mapping with that one key"), "{m}");

    let (line, _, m) = error("telemetry:\n  payload:\n    json:\n      x: {$bool: 120%}\n");
    assert_eq!(line, 11);
    assert!(m.contains("between 0% and 100%"), "{m}");
}

#[test]
fn references_are_checked_against_the_payload() {
    let (line, column, m) = error(
        "telemetry:\n  payload:\n    json: {t: 1}\n  properties:\n    application:\n      hot: {$above: {field: temp, threshold: 3}}\n",
    );
    assert_eq!((line, column), (13, 21), "{m}");
    assert!(
        m.contains("field \"temp\" is not in the payload template"),
        "{m}"
    );

    let (_, _, m) = error(
        "telemetry:\n  payload:\n    json: {s: abc}\n  properties:\n    application:\n      hot: {$above: {field: s, threshold: 3}}\n",
    );
    assert!(m.contains("is not a number"), "{m}");

    let (line, _, m) = error(
        "telemetry:\n  payload:\n    json:\n      alert: {$field: t}\n      t: {$uniform: {min: 0, max: 1}}\n",
    );
    assert_eq!(line, 11, "{m}");
    assert!(m.contains("comes after the reference"), "{m}");

    let (_, _, m) = error(
        "telemetry:\n  payload:\n    size: 1KB\n  properties:\n    application:\n      x: {$field: t}\n",
    );
    assert!(m.contains("raw bytes"), "{m}");

    let (_, _, m) = error("telemetry:\n  properties:\n    application:\n      iothub-x: 1\n");
    assert!(m.contains("reserved by IoT Hub"), "{m}");

    let (_, _, m) = error("telemetry:\n  properties:\n    application:\n      x: [1, 2]\n");
    assert!(m.contains("must be a scalar"), "{m}");

    // A reference written before its field, to an earlier one, and from a property: all fine.
    scenario(
        "telemetry:\n  payload:\n    json:\n      t: {$uniform: {min: 0, max: 1}}\n      hot: {$above: {field: t, threshold: 0.5}}\n  properties:\n    application:\n      t: {$field: t}\n",
    )
    .unwrap();
}

#[test]
fn sizes_and_schedules_are_checked() {
    let (line, _, m) = error("telemetry:\n  payload:\n    size: 300KB\n");
    assert_eq!(line, 10);
    assert!(m.contains("over 256 KB"), "{m}");
    let (_, _, m) =
        error("telemetry:\n  payload:\n    size: {dist: lognormal, p50: 16KB, p99: 1KB}\n");
    assert!(m.contains("below p99"), "{m}");
    let (_, _, m) = error("telemetry:\n  payload:\n    size: 1KB\n    json: {}\n");
    assert!(m.contains("one of the two"), "{m}");
    let (line, _, m) = error("telemetry:\n  interval: 5s\n  schedule: {every: 10s}\n");
    assert_eq!(line, 10);
    assert!(m.contains("interval or schedule, not both"), "{m}");
    let (line, _, m) = error("telemetry:\n  schedule: {every: 10s, count: 3}\n");
    assert_eq!(line, 9);
    assert!(m.contains("needs spacing"), "{m}");
}

#[test]
fn cohorts_take_what_they_leave_out_from_the_top_level() {
    let s = scenario(
        r#"
  cohorts:
    - name: thermostats
      share: 50%
      telemetry:
        schedule: {every: 30s, align: 1m}
        payload: {json: {t: {$walk: {min: 15, max: 30, step: 0.1}}}}
    - name: gateways
      share: 50%
      telemetry: {qos: 0}
telemetry:
  interval: 5s
  payload: {size: 16KB}
  properties: {content_type: application/octet-stream}
"#,
    )
    .unwrap();
    let [thermostats, gateways] =
        <[TelemetrySettings; 2]>::try_from(s.telemetry_settings()).unwrap();
    assert!(matches!(thermostats.schedule.ticks, Ticks::Aligned { .. }));
    assert!(matches!(thermostats.payload, Payload::Json(_)));
    // Its own payload, the top level's properties (and JSON's default encoding).
    let names: Vec<&str> = thermostats
        .properties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["$.ct", "$.ce"]);
    assert_eq!(
        thermostats.properties[0].value,
        Node::String("application/octet-stream".into())
    );
    assert_eq!(gateways.schedule, Schedule::every(Duration::from_secs(5)));
    assert_eq!(gateways.payload, Payload::Raw(SizeModel::Fixed(16 * 1024)));
    assert_eq!(gateways.qos, Qos::AtMostOnce);
}

#[test]
fn templates_serialize_back_to_what_was_written() {
    let s = scenario(
        "telemetry:\n  payload:\n    json:\n      a: $$literal\n      $$k: [1, 2.5, true, null, $counter]\n      w: {$walk: {min: 0, max: 1, step: 0.1}}\n      c: {$choice: {x: 1}}\n      r: {$repeat: {count: 2, item: {$bool: 50%}}}\n      f: {$field: a}\n",
    )
    .unwrap();
    let Some(Payload::Json(t)) = &s.telemetry.payload else {
        panic!("a template")
    };
    assert_eq!(t.at_path("a"), Some(&Node::String("$literal".into())));
    let yaml = serde_json::to_string(t).unwrap();
    let back: Node = serde_saphyr::from_str(&yaml).unwrap();
    // Locations differ (JSON text); compare what was written by serialising again.
    assert_eq!(serde_json::to_string(&back).unwrap(), yaml);
    assert!(
        yaml.contains(r#""a":"$$literal""#)
            && yaml.contains(r#""$$k":[1,2.5,true,null,"$counter"]"#),
        "{yaml}"
    );
}
