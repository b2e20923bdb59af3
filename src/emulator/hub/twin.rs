//! Device twins (reference §3, §4): one store for both sides. The device reads the whole twin
//! (`$iothub/twin/GET`) and patches its reported properties; the service reads the twin as IoT
//! Hub's twin JSON and patches or replaces tags and desired properties (never reported ones).
//!
//! Versions follow IoT Hub: a new twin has desired and reported `$version` 1 and twin `version`
//! 1; a desired change bumps the desired `$version`, a reported change the reported one, and any
//! change (tags included) the twin `version`, from which the etag is derived. `null` in a patch
//! deletes a member. IoT Hub's limits: desired and reported at most 32 KB each and tags 8 KB
//! (as compact JSON), objects at most 10 levels deep, and keys without `.`, `$`, spaces or
//! control characters; an update that would break one is refused as a whole.

use base64::Engine;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::iothub::registry::Device;

/// IoT Hub's size limit of the desired and of the reported properties.
pub const MAX_PROPERTIES_BYTES: usize = 32 * 1024;
/// IoT Hub's size limit of a twin's tags.
pub const MAX_TAGS_BYTES: usize = 8 * 1024;
/// How deep objects in tags and properties may nest.
pub const MAX_DEPTH: usize = 10;
/// IoT Hub's limit on the length of a key.
const MAX_KEY_BYTES: usize = 1024;

/// One device's twin.
#[derive(Debug, Clone)]
pub struct Twin {
    pub tags: Map<String, Value>,
    pub desired: Map<String, Value>,
    pub desired_version: u64,
    pub reported: Map<String, Value>,
    pub reported_version: u64,
    /// Bumped by every change (tags, desired or reported); the etag is derived from it.
    pub version: u64,
    pub desired_updated: OffsetDateTime,
    pub reported_updated: OffsetDateTime,
}

impl Default for Twin {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            tags: Map::new(),
            desired: Map::new(),
            desired_version: 1,
            reported: Map::new(),
            reported_version: 1,
            version: 1,
            desired_updated: now,
            reported_updated: now,
        }
    }
}

/// Which part of a twin an update was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Tags,
    Desired,
    Reported,
}

impl Section {
    pub fn name(self) -> &'static str {
        match self {
            Section::Tags => "tags",
            Section::Desired => "properties.desired",
            Section::Reported => "properties.reported",
        }
    }

    fn limit(self) -> usize {
        match self {
            Section::Tags => MAX_TAGS_BYTES,
            Section::Desired | Section::Reported => MAX_PROPERTIES_BYTES,
        }
    }
}

/// Why a twin update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    #[error("{section} must be a JSON object", section = .0.name())]
    NotAnObject(Section),
    #[error("{section}: invalid key {key:?} (no '.', '$', spaces or control characters; at most 1 KB)", section = .section.name())]
    InvalidKey { section: Section, key: String },
    #[error("{section}: objects nest deeper than {MAX_DEPTH} levels", section = .0.name())]
    TooDeep(Section),
    #[error("{section} would be {bytes} bytes, over IoT Hub's limit of {limit}", section = .section.name())]
    TooLarge {
        section: Section,
        bytes: usize,
        limit: usize,
    },
}

impl Twin {
    /// The etag IoT Hub would give this version of the twin (base64 of the 8-byte version).
    pub fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.version.to_be_bytes())
    }

    /// What the device's twin GET answers: both property sections with their `$version`.
    pub fn device_document(&self) -> Value {
        let mut desired = self.desired.clone();
        desired.insert("$version".into(), self.desired_version.into());
        let mut reported = self.reported.clone();
        reported.insert("$version".into(), self.reported_version.into());
        serde_json::json!({ "desired": desired, "reported": reported })
    }

    /// Merges a service patch: `tags` and `desired` (either may be absent). Returns the desired
    /// part as applied (for the device's notification) when desired properties changed.
    pub fn patch(
        &mut self,
        tags: Option<Map<String, Value>>,
        desired: Option<Map<String, Value>>,
    ) -> Result<Option<Map<String, Value>>, TwinError> {
        let desired = desired.map(strip_read_only);
        let mut next_tags = self.tags.clone();
        if let Some(t) = &tags {
            check_keys(Section::Tags, t)?;
            merge(&mut next_tags, t.clone());
            check_size(Section::Tags, &next_tags)?;
        }
        let mut next_desired = self.desired.clone();
        if let Some(d) = &desired {
            check_keys(Section::Desired, d)?;
            merge(&mut next_desired, d.clone());
            check_size(Section::Desired, &next_desired)?;
        }
        let tags_changed = next_tags != self.tags;
        let desired_changed = next_desired != self.desired;
        self.tags = next_tags;
        self.desired = next_desired;
        self.bump(tags_changed, desired_changed);
        Ok(desired.filter(|_| desired_changed))
    }

    /// Replaces tags and desired properties (a service PUT). Returns the new desired properties
    /// when they changed.
    pub fn replace(
        &mut self,
        tags: Map<String, Value>,
        desired: Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>, TwinError> {
        let desired = without_nulls(strip_read_only(desired));
        let tags = without_nulls(tags);
        check_keys(Section::Tags, &tags)?;
        check_size(Section::Tags, &tags)?;
        check_keys(Section::Desired, &desired)?;
        check_size(Section::Desired, &desired)?;
        let tags_changed = tags != self.tags;
        let desired_changed = desired != self.desired;
        self.tags = tags;
        self.desired = desired;
        self.bump(tags_changed, desired_changed);
        Ok(desired_changed.then(|| self.desired.clone()))
    }

    /// Merges a device's reported-properties patch.
    pub fn patch_reported(&mut self, patch: Map<String, Value>) -> Result<(), TwinError> {
        check_keys(Section::Reported, &patch)?;
        let mut next = self.reported.clone();
        merge(&mut next, patch);
        check_size(Section::Reported, &next)?;
        self.reported = next;
        self.reported_version += 1;
        self.reported_updated = OffsetDateTime::now_utc();
        self.version += 1;
        Ok(())
    }

    fn bump(&mut self, tags_changed: bool, desired_changed: bool) {
        if desired_changed {
            self.desired_version += 1;
            self.desired_updated = OffsetDateTime::now_utc();
        }
        if tags_changed || desired_changed {
            self.version += 1;
        }
    }

    /// IoT Hub's twin JSON for the service, with the registry's view of `device`.
    pub fn service_json(&self, device: &Device) -> Value {
        let mut desired = self.desired.clone();
        desired.insert(
            "$metadata".into(),
            serde_json::json!({
                "$lastUpdated": iso8601(self.desired_updated),
                "$lastUpdatedVersion": self.desired_version,
            }),
        );
        desired.insert("$version".into(), self.desired_version.into());
        let mut reported = self.reported.clone();
        reported.insert(
            "$metadata".into(),
            serde_json::json!({ "$lastUpdated": iso8601(self.reported_updated) }),
        );
        reported.insert("$version".into(), self.reported_version.into());
        serde_json::json!({
            "deviceId": device.device_id,
            "etag": self.etag(),
            "deviceEtag": device.etag,
            "status": device.status,
            "statusReason": device.status_reason,
            "statusUpdateTime": zoned(&device.status_updated_time),
            "connectionState": device.connection_state,
            "lastActivityTime": zoned(&device.last_activity_time),
            "cloudToDeviceMessageCount": device.cloud_to_device_message_count,
            "authenticationType": device.authentication.kind,
            "x509Thumbprint": device.authentication.x509_thumbprint,
            "modelId": "",
            "version": self.version,
            "tags": self.tags,
            "properties": { "desired": desired, "reported": reported },
            "capabilities": device.capabilities,
        })
    }
}

/// A time as IoT Hub writes it: UTC, seven fractional digits, `Z`.
pub fn iso8601(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// The registry's "never" (`0001-01-01T00:00:00`) in the zoned form twins carry.
fn zoned(time: &str) -> String {
    if time.ends_with('Z') || time.contains('+') {
        time.to_string()
    } else {
        format!("{time}Z")
    }
}

/// Drops the read-only members a twin read back carries (`$version`, `$metadata`).
fn strip_read_only(mut section: Map<String, Value>) -> Map<String, Value> {
    section.remove("$version");
    section.remove("$metadata");
    section
}

/// A replacement has no "delete" meaning for `null`: members set to null are simply absent.
fn without_nulls(section: Map<String, Value>) -> Map<String, Value> {
    section
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::Object(inner) => Some((k, Value::Object(without_nulls(inner)))),
            other => Some((k, other)),
        })
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && !key
            .chars()
            .any(|c| c == '.' || c == '$' || c == ' ' || c.is_control())
}

/// Keys are valid and objects at most [`MAX_DEPTH`] levels deep.
fn check_keys(section: Section, map: &Map<String, Value>) -> Result<(), TwinError> {
    fn walk(section: Section, map: &Map<String, Value>, depth: usize) -> Result<(), TwinError> {
        if depth > MAX_DEPTH {
            return Err(TwinError::TooDeep(section));
        }
        for (k, v) in map {
            if !valid_key(k) {
                return Err(TwinError::InvalidKey {
                    section,
                    key: k.chars().take(64).collect(),
                });
            }
            if let Value::Object(inner) = v {
                walk(section, inner, depth + 1)?;
            }
        }
        Ok(())
    }
    walk(section, map, 1)
}

fn check_size(section: Section, map: &Map<String, Value>) -> Result<(), TwinError> {
    let bytes = serde_json::to_vec(map).map_or(usize::MAX, |v| v.len());
    if bytes > section.limit() {
        return Err(TwinError::TooLarge {
            section,
            bytes,
            limit: section.limit(),
        });
    }
    Ok(())
}

/// JSON merge patch: objects merge recursively, `null` removes.
fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(&k);
            }
            Value::Object(inner) => {
                let slot = target.entry(k).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(m) = slot {
                    merge(m, inner);
                }
            }
            other => {
                target.insert(k, other);
            }
        }
    }
}

#[cfg(test)]
#[path = "twin_tests.rs"]
mod tests;
