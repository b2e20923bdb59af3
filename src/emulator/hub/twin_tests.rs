//! The twin model: versions, merge and replace, IoT Hub's limits, the service's JSON.

use serde_json::{Map, Value, json};

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn patches_merge_and_bump_versions() {
    let mut twin = Twin::default();
    let etag = twin.etag();
    let applied = twin
        .patch(
            Some(obj(json!({"site": {"room": "1R"}}))),
            Some(obj(json!({"interval": 5, "$version": 9, "$metadata": {}}))),
        )
        .unwrap();
    assert_eq!(
        applied,
        Some(obj(json!({"interval": 5}))),
        "read-only keys dropped"
    );
    assert_eq!((twin.desired_version, twin.version), (2, 2));
    assert_ne!(twin.etag(), etag);

    // A tags-only patch changes the twin, not the desired properties.
    let applied = twin
        .patch(Some(obj(json!({"site": {"room": null}}))), None)
        .unwrap();
    assert_eq!(applied, None);
    assert_eq!((twin.desired_version, twin.version), (2, 3));
    assert_eq!(Value::Object(twin.tags.clone()), json!({"site": {}}));

    // Patching to the same values changes nothing.
    let applied = twin.patch(None, Some(obj(json!({"interval": 5})))).unwrap();
    assert_eq!((applied, twin.version), (None, 3));

    let applied = twin
        .patch(None, Some(obj(json!({"interval": null}))))
        .unwrap();
    assert_eq!(
        applied,
        Some(obj(json!({"interval": null}))),
        "deletions are pushed"
    );
    assert!(twin.desired.is_empty());
}

#[test]
fn replace_sets_tags_and_desired_whole() {
    let mut twin = Twin::default();
    twin.patch(Some(obj(json!({"a": 1}))), Some(obj(json!({"x": 1}))))
        .unwrap();
    let applied = twin
        .replace(obj(json!({"b": 2})), obj(json!({"y": {"z": null, "w": 1}})))
        .unwrap();
    assert_eq!(applied, Some(obj(json!({"y": {"w": 1}}))));
    assert_eq!(Value::Object(twin.tags.clone()), json!({"b": 2}));
    assert_eq!(twin.desired_version, 3);
}

#[test]
fn limits_refuse_the_whole_update() {
    let mut twin = Twin::default();
    let big = "x".repeat(MAX_PROPERTIES_BYTES);
    let err = twin
        .patch(Some(obj(json!({"ok": 1}))), Some(obj(json!({"blob": big}))))
        .unwrap_err();
    assert!(matches!(
        err,
        TwinError::TooLarge {
            section: Section::Desired,
            ..
        }
    ));
    assert!(twin.tags.is_empty(), "the tags part was not applied either");
    assert_eq!(twin.version, 1);

    let tags = "t".repeat(MAX_TAGS_BYTES);
    let err = twin.patch(Some(obj(json!({"t": tags}))), None).unwrap_err();
    assert!(err.to_string().contains("tags would be"), "{err}");

    for key in ["a.b", "$x", "a b", "", "tab\t"] {
        let mut m = Map::new();
        m.insert(key.into(), 1.into());
        assert!(
            matches!(twin.patch(None, Some(m)), Err(TwinError::InvalidKey { .. })),
            "{key:?}"
        );
    }
    let mut deep = json!(1);
    for _ in 0..MAX_DEPTH {
        deep = json!({ "k": deep });
    }
    assert!(
        twin.patch(None, Some(obj(deep.clone()))).is_ok(),
        "10 levels pass"
    );
    let deeper = obj(json!({ "k": deep }));
    assert_eq!(
        twin.patch(None, Some(deeper)),
        Err(TwinError::TooDeep(Section::Desired))
    );
}

#[test]
fn the_service_json_has_iot_hubs_fields() {
    let mut twin = Twin::default();
    twin.patch_reported(obj(json!({"fw": "1.0"}))).unwrap();
    let device = Device::certificate_authority("d1");
    let j = twin.service_json(&device);
    assert_eq!(j["deviceId"], "d1");
    assert_eq!(j["etag"], twin.etag());
    assert_eq!(j["status"], "enabled");
    assert_eq!(j["connectionState"], "Disconnected");
    assert_eq!(j["statusUpdateTime"], "0001-01-01T00:00:00Z");
    assert_eq!(j["authenticationType"], "certificateAuthority");
    assert_eq!(j["version"], 2);
    assert_eq!(j["properties"]["reported"]["fw"], "1.0");
    assert_eq!(j["properties"]["reported"]["$version"], 2);
    assert_eq!(j["properties"]["desired"]["$version"], 1);
    let updated = j["properties"]["desired"]["$metadata"]["$lastUpdated"]
        .as_str()
        .unwrap();
    assert_eq!(
        updated.len(),
        "2024-05-01T10:11:12.1234567Z".len(),
        "{updated}"
    );
    assert!(updated.ends_with('Z'));
}

#[test]
fn times_are_written_with_seven_fractional_digits() {
    let t = OffsetDateTime::from_unix_timestamp_nanos(1_714_558_272_123_456_789).unwrap();
    assert_eq!(iso8601(t), "2024-05-01T10:11:12.1234567Z");
}
