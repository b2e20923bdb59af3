//! Device identities as the registry REST API exchanges them (reference §4.2, §4.1): the device
//! JSON (camelCase on the wire) and the bulk-operation bodies. Shared by the registry client and
//! the hub emulator.

use serde::{Deserialize, Serialize};

/// A device identity as the registry returns it (camelCase on the wire).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    #[serde(default)]
    pub generation_id: String,
    #[serde(default)]
    pub etag: String,
    #[serde(default = "enabled")]
    pub status: DeviceStatus,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default = "never")]
    pub status_updated_time: String,
    #[serde(default = "disconnected")]
    pub connection_state: String,
    #[serde(default = "never")]
    pub connection_state_updated_time: String,
    #[serde(default = "never")]
    pub last_activity_time: String,
    #[serde(default)]
    pub cloud_to_device_message_count: u64,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub device_scope: Option<String>,
    #[serde(default)]
    pub parent_scopes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    #[default]
    Enabled,
    Disabled,
}

fn enabled() -> DeviceStatus {
    DeviceStatus::Enabled
}
fn never() -> String {
    "0001-01-01T00:00:00".into()
}
fn disconnected() -> String {
    "Disconnected".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    #[serde(rename = "type", default)]
    pub kind: AuthenticationType,
    #[serde(default)]
    pub symmetric_key: SymmetricKey,
    #[serde(default)]
    pub x509_thumbprint: X509Thumbprint,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AuthenticationType {
    #[default]
    Sas,
    SelfSigned,
    CertificateAuthority,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub iot_edge: bool,
}

impl Device {
    /// A new CA-signed device, as `az iot hub device-identity create --am x509_ca` makes it.
    pub fn certificate_authority(device_id: &str) -> Self {
        Self {
            device_id: device_id.into(),
            generation_id: String::new(),
            etag: String::new(),
            status: DeviceStatus::Enabled,
            status_reason: None,
            status_updated_time: never(),
            connection_state: disconnected(),
            connection_state_updated_time: never(),
            last_activity_time: never(),
            cloud_to_device_message_count: 0,
            authentication: Authentication {
                kind: AuthenticationType::CertificateAuthority,
                ..Default::default()
            },
            capabilities: Capabilities::default(),
            device_scope: None,
            parent_scopes: Vec::new(),
        }
    }
}

/// One entry of a bulk registry operation (`POST /devices`), `ExportImportDevice` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportDevice {
    pub id: String,
    #[serde(default)]
    pub e_tag: Option<String>,
    pub import_mode: ImportMode,
    #[serde(default = "enabled")]
    pub status: DeviceStatus,
    #[serde(default)]
    pub authentication: Option<Authentication>,
    /// Twin tags set with the identity (fleetsim's run tag, see [`run_tags`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The twin tags that mark an identity as created by run `run_id`: `{"fleetsim":{"run":ID}}`,
/// read in queries as `tags.fleetsim.run` (twin keys may not contain dots, so it nests).
pub fn run_tags(run_id: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut tags = serde_json::Map::new();
    tags.insert(
        "fleetsim".into(),
        serde_json::json!({ RUN_TAG_FIELD: run_id }),
    );
    tags
}

/// The field under `tags.fleetsim` that holds the run id.
pub const RUN_TAG_FIELD: &str = "run";

/// The run id an identity's twin tags name, if any.
pub fn run_of(tags: &serde_json::Map<String, serde_json::Value>) -> Option<&str> {
    tags.get("fleetsim")?.get(RUN_TAG_FIELD)?.as_str()
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ImportMode {
    Create,
    CreateOrUpdate,
    Update,
    UpdateIfMatchETag,
    CreateOrUpdateIfMatchETag,
    Delete,
    DeleteIfMatchETag,
}

/// `BulkRegistryOperationResult`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub is_successful: bool,
    #[serde(default)]
    pub errors: Vec<BulkError>,
    #[serde(default)]
    pub warnings: Vec<BulkError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BulkError {
    pub device_id: String,
    #[serde(default)]
    pub module_id: Option<String>,
    pub error_code: String,
    pub error_status: String,
}

/// The most devices one bulk call may name.
pub const BULK_MAX: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_json_uses_wire_names() {
        let v = serde_json::to_value(Device::certificate_authority("d1")).unwrap();
        assert_eq!(v["deviceId"], "d1");
        assert_eq!(v["status"], "enabled");
        assert_eq!(v["authentication"]["type"], "certificateAuthority");
        assert!(v["authentication"]["x509Thumbprint"]["primaryThumbprint"].is_null());
        assert_eq!(v["capabilities"]["iotEdge"], false);
        let b = ExportImportDevice {
            id: "d".into(),
            e_tag: None,
            import_mode: ImportMode::Create,
            status: DeviceStatus::Enabled,
            authentication: None,
            tags: None,
        };
        let v = serde_json::to_value(b).unwrap();
        assert_eq!(v["importMode"], "create");
        assert!(v.get("eTag").is_some());
    }
}
