//! The hub's registry REST API (reference §4): `PUT`/`GET`/`DELETE /devices/{id}?api-version=...`
//! and bulk `POST /devices`, authorised by a service SAS token (or, in emulator mode, an Azure AD
//! bearer token), with IoT Hub's error bodies and `iothub-errorcode` header.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use base64::Engine;

use super::rest::{
    ApiVersion, admit, argument_invalid, device_not_found, error, etag_mismatch, if_match,
};
use super::state::HubState;
use crate::iothub::identity::{
    BULK_MAX, BulkError, BulkResult, Device, DeviceStatus, ExportImportDevice, ImportMode,
};
use crate::sync::lock;

pub(super) fn routes() -> axum::Router<Arc<HubState>> {
    axum::Router::new()
        .route(
            "/devices/{id}",
            put(put_device).get(get_device).delete(delete_device),
        )
        .route("/devices", post(bulk))
}

pub(super) fn valid_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-:.+%_#*?!(),=@;$'".contains(c))
}

fn next_etag(state: &HubState) -> String {
    let n = state.etag_counter.fetch_add(1, Ordering::Relaxed);
    base64::engine::general_purpose::STANDARD.encode(n.to_string())
}

/// A new device's generation id: 18 decimal digits, as IoT Hub writes them.
fn new_generation_id() -> String {
    format!("{:018}", rand::random::<u64>() % 10u64.pow(18))
}

async fn put_device(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &format!("devices/{id}")).await {
        return *r;
    }
    let mut device: Device = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => return argument_invalid(&format!("device JSON: {e}")),
    };
    if device.device_id != id || !valid_device_id(&id) {
        return argument_invalid("deviceId is invalid or differs from the URL");
    }
    if let Err(why) = super::credentials::settle(&mut device.authentication) {
        return argument_invalid(&why);
    }
    let mut devices = lock(&state.devices);
    let disable = device.status == DeviceStatus::Disabled;
    match (devices.get(&id), if_match(&headers)) {
        (Some(_), None) => {
            return error(
                StatusCode::CONFLICT,
                409001,
                "DeviceAlreadyExists",
                &format!("A device with ID '{id}' is already registered."),
            );
        }
        (None, Some(_)) => return device_not_found(&id),
        (Some(existing), Some(etag)) => {
            if etag != "*" && etag != existing.etag {
                return etag_mismatch();
            }
            stamp(&mut device, Some(existing));
        }
        (None, None) => stamp(&mut device, None),
    }
    device.etag = next_etag(&state);
    devices.insert(id.clone(), device.clone());
    drop(devices);
    state.journal_device(&id);
    if disable {
        // Disabling a connected device drops it, as IoT Hub does.
        state.drop_connection(&id);
    }
    Json(state.device_view(&device)).into_response()
}

/// Fills the fields the hub owns, whatever the client sent: the generation id (kept across
/// updates, new for a new identity), when the status last changed (IoT Hub's "never" until it
/// does), the read-only counters, and an edge device's scope (`ms-azure-iot-edge://{id}-{gen}`).
fn stamp(device: &mut Device, existing: Option<&Device>) {
    let never = "0001-01-01T00:00:00".to_string();
    match existing {
        Some(old) => {
            device.generation_id = old.generation_id.clone();
            device.status_updated_time = match old.status == device.status {
                true => old.status_updated_time.clone(),
                false => super::twin::iso8601(time::OffsetDateTime::now_utc()),
            };
        }
        None => {
            device.generation_id = new_generation_id();
            device.status_updated_time = never.clone();
        }
    }
    device.connection_state = "Disconnected".into();
    device.connection_state_updated_time = never.clone();
    device.last_activity_time = never;
    device.cloud_to_device_message_count = 0;
    if device.capabilities.iot_edge && device.device_scope.is_none() {
        let scope = format!(
            "ms-azure-iot-edge://{}-{}",
            device.device_id, device.generation_id
        );
        device.device_scope = Some(scope);
    }
}

/// Creates `id` as an enabled CA-authenticated device, or makes the existing identity one (as
/// DPS does when it assigns a device here). False if `id` is not a valid device id.
pub(super) fn provision_ca_device(state: &HubState, id: &str) -> bool {
    if !valid_device_id(id) {
        return false;
    }
    let mut devices = crate::sync::lock(&state.devices);
    let mut device = Device::certificate_authority(id);
    device.generation_id = match devices.get(id) {
        Some(existing) => existing.generation_id.clone(),
        None => format!("{:018}", rand::random::<u64>() % 10u64.pow(18)),
    };
    device.etag = next_etag(state);
    devices.insert(id.to_string(), device);
    drop(devices);
    state.journal_device(id);
    true
}

/// Sets a registered device's status to disabled (new etag) and drops its connection.
pub(super) fn disable(state: &HubState, id: &str) -> bool {
    let mut devices = lock(&state.devices);
    let Some(device) = devices.get_mut(id) else {
        return false;
    };
    device.status = DeviceStatus::Disabled;
    device.etag = next_etag(state);
    drop(devices);
    state.drop_connection(id);
    true
}

async fn get_device(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &format!("devices/{id}")).await {
        return *r;
    }
    let device = lock(&state.devices).get(&id).cloned();
    match device {
        Some(d) => Json(state.device_view(&d)).into_response(),
        None => device_not_found(&id),
    }
}

async fn delete_device(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &format!("devices/{id}")).await {
        return *r;
    }
    let mut devices = lock(&state.devices);
    let Some(existing) = devices.get(&id) else {
        return device_not_found(&id);
    };
    if let Some(etag) = if_match(&headers)
        && etag != "*"
        && etag != existing.etag
    {
        return etag_mismatch();
    }
    devices.remove(&id);
    drop(devices);
    // The twin goes with the identity: a device created again under this id starts afresh.
    lock(&state.twins).remove(&id);
    // So do its cloud-to-device messages and its C2D session.
    state.c2d.purge(&id);
    lock(&state.c2d_sessions).remove(&id);
    state.journal_device(&id);
    state.drop_connection(&id);
    StatusCode::NO_CONTENT.into_response()
}

/// Bulk create/update/delete of up to 100 devices. Each entry is applied on its own; if any fails
/// the answer is 400 with the per-device errors, as IoT Hub does.
async fn bulk(
    State(state): State<Arc<HubState>>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, "devices").await {
        return *r;
    }
    let entries = match bulk_entries(&body) {
        Ok(entries) => entries,
        Err(response) => return *response,
    };
    let changed: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let mut errors = Vec::new();
    let mut dropped = Vec::new();
    {
        let mut devices = lock(&state.devices);
        for entry in entries {
            match apply_entry(&state, &mut devices, entry) {
                Ok(Some(id)) => dropped.push(id),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    for id in &changed {
        state.journal_device(id);
    }
    for id in dropped {
        if !lock(&state.devices).contains_key(&id) {
            lock(&state.twins).remove(&id);
        }
        state.drop_connection(&id);
    }
    let result = BulkResult {
        is_successful: errors.is_empty(),
        errors,
        warnings: Vec::new(),
    };
    let status = if result.is_successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(result)).into_response()
}

/// A bulk body's entries: valid JSON, at most 100, no device twice.
fn bulk_entries(body: &[u8]) -> Result<Vec<ExportImportDevice>, Box<Response>> {
    let entries: Vec<ExportImportDevice> = serde_json::from_slice(body)
        .map_err(|e| Box::new(argument_invalid(&format!("bulk body: {e}"))))?;
    if entries.len() > BULK_MAX {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            413002,
            "TooManyDevices",
            "at most 100 devices per bulk operation",
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = entries.iter().find(|e| !seen.insert(e.id.as_str())) {
        return Err(Box::new(argument_invalid(&format!(
            "device {} is listed twice",
            dup.id
        ))));
    }
    Ok(entries)
}

/// Applies one bulk entry. `Ok(Some(id))`: the device was deleted or disabled, so its
/// connection is to be dropped.
fn apply_entry(
    state: &HubState,
    devices: &mut HashMap<String, Device>,
    entry: ExportImportDevice,
) -> Result<Option<String>, BulkError> {
    let fail = |code: &str, status: &str| BulkError {
        device_id: entry.id.clone(),
        module_id: None,
        error_code: code.into(),
        error_status: status.into(),
    };
    let exists = devices.get(&entry.id);
    let etag_ok = |d: &Device| {
        entry
            .e_tag
            .as_deref()
            .is_none_or(|t| t == "*" || t.trim_matches('"') == d.etag)
    };
    match entry.import_mode {
        _ if !valid_device_id(&entry.id) => Err(fail("ArgumentInvalid", "invalid device id")),
        ImportMode::Create if exists.is_some() => {
            Err(fail("DeviceAlreadyExists", "device already exists"))
        }
        ImportMode::Update | ImportMode::UpdateIfMatchETag if exists.is_none() => {
            Err(fail("DeviceNotFound", "device not found"))
        }
        ImportMode::UpdateIfMatchETag
        | ImportMode::CreateOrUpdateIfMatchETag
        | ImportMode::DeleteIfMatchETag
            if exists.is_some_and(|d| !etag_ok(d)) =>
        {
            Err(fail("PreconditionFailed", "etag mismatch"))
        }
        ImportMode::Delete | ImportMode::DeleteIfMatchETag => match devices.remove(&entry.id) {
            Some(_) => Ok(Some(entry.id)),
            None => Err(fail("DeviceNotFound", "device not found")),
        },
        _ => {
            let mut device = Device::certificate_authority(&entry.id);
            if let Some(auth) = entry.authentication.clone() {
                device.authentication = auth;
            }
            if let Err(why) = super::credentials::settle(&mut device.authentication) {
                return Err(fail("ArgumentInvalid", &why));
            }
            device.status = entry.status;
            device.generation_id =
                exists.map_or_else(new_generation_id, |d| d.generation_id.clone());
            device.etag = next_etag(state);
            let disabled = device.status == DeviceStatus::Disabled;
            devices.insert(entry.id.clone(), device);
            if let Some(tags) = entry.tags.clone() {
                let mut twins = lock(&state.twins);
                let twin = twins.entry(entry.id.clone()).or_default();
                if twin.patch(Some(tags), None).is_err() {
                    return Err(fail("ArgumentInvalid", "tags are not valid twin tags"));
                }
            }
            Ok(disabled.then_some(entry.id))
        }
    }
}
