//! A twin as a query sees it ([`Document`]) without building its JSON: the members queries name
//! most (`deviceId`, `status`, `connectionState`, `tags.*`, `properties.desired.*`,
//! `properties.reported.*`, `version`) are looked up in the twin store and the registry entry
//! directly; any other path falls back to the twin's full JSON ([`Twin::service_json`]), so the
//! answers are the same either way.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::query::Document;
use super::twin::Twin;
use crate::iothub::registry::Device;

pub(super) struct TwinView<'a> {
    pub(super) twin: &'a Twin,
    /// The registry entry with its connection state filled in.
    pub(super) device: &'a Device,
}

impl Document for TwinView<'_> {
    fn member(&self, path: &[String]) -> Option<Cow<'_, Value>> {
        let (first, rest) = path.split_first()?;
        let scalar = |v: Value| rest.is_empty().then_some(Cow::Owned(v));
        match first.as_str() {
            "deviceId" => scalar(Value::from(self.device.device_id.as_str())),
            "connectionState" => scalar(Value::from(self.device.connection_state.as_str())),
            "status" => scalar(serde_json::to_value(self.device.status).ok()?),
            "version" => scalar(Value::from(self.twin.version)),
            "tags" => within(&self.twin.tags, rest, None),
            "properties" => match rest.split_first() {
                Some((s, rest)) if s == "desired" => {
                    within(&self.twin.desired, rest, Some(self.twin.desired_version))
                }
                Some((s, rest)) if s == "reported" => {
                    within(&self.twin.reported, rest, Some(self.twin.reported_version))
                }
                _ => self.full(path),
            },
            _ => self.full(path),
        }
    }
}

impl TwinView<'_> {
    /// The member from the twin's whole JSON: for the paths not looked up directly.
    fn full(&self, path: &[String]) -> Option<Cow<'_, Value>> {
        let json = self.twin.service_json(self.device);
        json.member(path).map(|v| Cow::Owned(v.into_owned()))
    }
}

/// The member at `rest` inside a section. `$version` is the section's version; the section
/// itself (an empty `rest`) and `$metadata` are built only when asked for.
fn within<'a>(
    section: &'a Map<String, Value>,
    rest: &[String],
    version: Option<u64>,
) -> Option<Cow<'a, Value>> {
    let Some((first, deeper)) = rest.split_first() else {
        let mut whole = section.clone();
        if let Some(v) = version {
            whole.insert("$version".into(), v.into());
        }
        return Some(Cow::Owned(Value::Object(whole)));
    };
    if let Some(version) = version
        && first == "$version"
    {
        return deeper.is_empty().then(|| Cow::Owned(version.into()));
    }
    let member = section.get(first)?;
    deeper
        .iter()
        .try_fold(member, |v, name| v.as_object()?.get(name))
        .map(Cow::Borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path answers as the full JSON does (metadata aside, which only the JSON has).
    #[test]
    fn members_match_the_twins_json() {
        let mut twin = Twin::default();
        let tags = serde_json::json!({"site": {"room": "1R", "n": 2}, "list": [1, 2]});
        let desired = serde_json::json!({"interval": 5, "deep": {"a": {"b": null}}});
        let (Value::Object(tags), Value::Object(desired)) = (tags, desired) else {
            unreachable!()
        };
        twin.patch(Some(tags), Some(desired)).unwrap();
        let reported = serde_json::json!({"fw": "1.0"});
        let Value::Object(reported) = reported else {
            unreachable!()
        };
        twin.patch_reported(reported).unwrap();
        let mut device = Device::certificate_authority("d1");
        device.connection_state = "Connected".into();
        let view = TwinView {
            twin: &twin,
            device: &device,
        };
        let json = twin.service_json(&device);
        let paths = [
            "deviceId",
            "status",
            "connectionState",
            "version",
            "etag",
            "tags",
            "tags.site",
            "tags.site.room",
            "tags.site.n",
            "tags.list",
            "tags.missing",
            "tags.site.room.x",
            "properties.desired.interval",
            "properties.desired.$version",
            "properties.desired.deep.a",
            "properties.reported.fw",
            "properties.reported.$version",
            "properties.reported.nope",
            "properties.other",
            "authenticationType",
            "capabilities.iotEdge",
            "deviceId.x",
            "lastActivityTime",
            "nothing",
        ];
        for path in paths {
            let path: Vec<String> = path.split('.').map(String::from).collect();
            assert_eq!(
                view.member(&path).map(Cow::into_owned),
                json.member(&path).map(Cow::into_owned),
                "{path:?}"
            );
        }
        let desired: Vec<String> = vec!["properties".into(), "desired".into()];
        let whole = view.member(&desired).unwrap();
        assert_eq!(whole["interval"], 5);
        assert_eq!(whole["$version"], 2);
    }
}
