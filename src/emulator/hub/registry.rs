//! The hub's registry REST API (reference §4): `PUT`/`GET`/`DELETE /devices/{id}?api-version=...`
//! and bulk `POST /devices`, authorised by a service SAS token (or, in emulator mode, an Azure AD
//! bearer token), with IoT Hub's error bodies and `iothub-errorcode` header.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use base64::Engine;
use serde::Deserialize;

use super::HubState;
use super::throttle::{Admission, Class};
use crate::iothub::identity::{
    BULK_MAX, BulkError, BulkResult, Device, DeviceStatus, ExportImportDevice, ImportMode,
};
use crate::iothub::sas;

pub(super) fn router(state: Arc<HubState>) -> axum::Router {
    axum::Router::new()
        .route(
            "/devices/{id}",
            put(put_device).get(get_device).delete(delete_device),
        )
        .route("/devices", post(bulk))
        .route("/certificates/{name}", put(super::admin::upload_ca))
        .with_state(state)
}

#[derive(Deserialize)]
pub(super) struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// An IoT Hub error: status, numeric code and name (`404001`, `DeviceNotFound`).
pub(super) fn error(status: StatusCode, code: u32, name: &'static str, message: &str) -> Response {
    let inner = serde_json::json!({
        "errorCode": code,
        "message": message,
        "trackingId": uuid::Uuid::new_v4().simple().to_string(),
        "timestampUtc": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "info": null,
    });
    let body = serde_json::json!({ "Message": inner.to_string(), "ExceptionMessage": "" });
    (status, [("iothub-errorcode", name)], Json(body)).into_response()
}

/// Checks the api-version and the authorisation for a request on `resource` (the path below the
/// hub's host name, e.g. `devices/d1`): a service SAS token of the `iothubowner` policy whose
/// resource is a prefix of it, or (emulator mode) an Azure AD bearer token minted by this hub.
/// `Err` is the response to send.
pub(super) fn authorize(
    state: &HubState,
    headers: &HeaderMap,
    query: &ApiVersion,
    resource: &str,
) -> Result<(), Box<Response>> {
    if query.api_version.as_deref().is_none_or(str::is_empty) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            400004,
            "InvalidProtocolVersion",
            "api-version is required",
        )));
    }
    let unauthorized = |why: &str| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            401003,
            "IotHubUnauthorized",
            why,
        ))
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("no Authorization header"))?;
    if header.starts_with("Bearer ") {
        return state
            .tokens
            .verify(Some(header))
            .map(|_| ())
            .map_err(unauthorized);
    }
    let token = sas::parse(header)
        .ok_or_else(|| unauthorized("Authorization is not a SharedAccessSignature"))?;
    if token.policy.as_deref() != Some(state.policy_name.as_str()) {
        return Err(unauthorized(
            "unknown or missing shared access policy (skn)",
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let resource = format!("{}/{resource}", state.host_name);
    sas::verify(&token, &state.policy_key, &resource, now).map_err(|r| unauthorized(&r.to_string()))
}

/// Applies the registry throttle and the daily quota: delays within the shaping window, then 429
/// with `Retry-After`; 403002 once the quota is spent.
pub(super) async fn throttle(state: &HubState) -> Result<(), Box<Response>> {
    if state.throttles.quota_spent() {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            403002,
            "IotHubQuotaExceeded",
            "Total number of messages on IotHub exceeded the allocated quota",
        )));
    }
    match state.throttles.admit(Class::Registry) {
        Admission::After(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Admission::Refuse(wait) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                429001,
                "ThrottlingException",
                "Request was throttled",
            );
            if let Ok(v) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(Box::new(r))
        }
    }
}

fn valid_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-:.+%_#*?!(),=@;$'".contains(c))
}

fn next_etag(state: &HubState) -> String {
    let n = state.etag_counter.fetch_add(1, Ordering::Relaxed);
    base64::engine::general_purpose::STANDARD.encode(n.to_string())
}

async fn put_device(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, &format!("devices/{id}")) {
        return *r;
    }
    if let Err(r) = throttle(&state).await {
        return *r;
    }
    let mut device: Device = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                400001,
                "ArgumentInvalid",
                &format!("device JSON: {e}"),
            );
        }
    };
    if device.device_id != id || !valid_device_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            400001,
            "ArgumentInvalid",
            "deviceId is invalid or differs from the URL",
        );
    }
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().trim_matches('"').to_string());
    let mut devices = state.devices.lock().unwrap_or_else(|p| p.into_inner());
    let disable = device.status == DeviceStatus::Disabled;
    match (devices.get(&id), if_match) {
        (Some(_), None) => {
            return error(
                StatusCode::CONFLICT,
                409001,
                "DeviceAlreadyExists",
                &format!("A device with ID '{id}' is already registered."),
            );
        }
        (None, Some(_)) => {
            return error(
                StatusCode::NOT_FOUND,
                404001,
                "DeviceNotFound",
                &format!("Device {id} not found."),
            );
        }
        (Some(existing), Some(etag)) => {
            if etag != "*" && etag != existing.etag {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    412001,
                    "PreconditionFailed",
                    "ETag mismatch",
                );
            }
            device.generation_id = existing.generation_id.clone();
        }
        (None, None) => {
            let generation: u64 = rand::random::<u64>() % 10u64.pow(18);
            device.generation_id = format!("{generation:018}");
        }
    }
    device.etag = next_etag(&state);
    devices.insert(id.clone(), device.clone());
    drop(devices);
    state.journal_device(&id);
    if disable {
        // Disabling a connected device drops it, as IoT Hub does.
        state.drop_connection(&id);
    }
    Json(device).into_response()
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
    let mut devices = state.devices.lock().unwrap_or_else(|p| p.into_inner());
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
    if let Err(r) = authorize(&state, &headers, &query, &format!("devices/{id}")) {
        return *r;
    }
    if let Err(r) = throttle(&state).await {
        return *r;
    }
    match state
        .devices
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
    {
        Some(d) => Json(d.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            404001,
            "DeviceNotFound",
            &format!("Device {id} not found."),
        ),
    }
}

async fn delete_device(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, &format!("devices/{id}")) {
        return *r;
    }
    if let Err(r) = throttle(&state).await {
        return *r;
    }
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().trim_matches('"').to_string());
    let mut devices = state.devices.lock().unwrap_or_else(|p| p.into_inner());
    let Some(existing) = devices.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            404001,
            "DeviceNotFound",
            &format!("Device {id} not found."),
        );
    };
    if let Some(etag) = if_match
        && etag != "*"
        && etag != existing.etag
    {
        return error(
            StatusCode::PRECONDITION_FAILED,
            412001,
            "PreconditionFailed",
            "ETag mismatch",
        );
    }
    devices.remove(&id);
    drop(devices);
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
    if let Err(r) = authorize(&state, &headers, &query, "devices") {
        return *r;
    }
    if let Err(r) = throttle(&state).await {
        return *r;
    }
    let entries: Vec<ExportImportDevice> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                400001,
                "ArgumentInvalid",
                &format!("bulk body: {e}"),
            );
        }
    };
    if entries.len() > BULK_MAX {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            413002,
            "TooManyDevices",
            "at most 100 devices per bulk operation",
        );
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = entries.iter().find(|e| !seen.insert(e.id.as_str())) {
        return error(
            StatusCode::BAD_REQUEST,
            400001,
            "ArgumentInvalid",
            &format!("device {} is listed twice", dup.id),
        );
    }
    let changed: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let mut errors = Vec::new();
    let mut dropped = Vec::new();
    {
        let mut devices = state.devices.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries {
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
                _ if !valid_device_id(&entry.id) => {
                    errors.push(fail("ArgumentInvalid", "invalid device id"))
                }
                ImportMode::Create if exists.is_some() => {
                    errors.push(fail("DeviceAlreadyExists", "device already exists"))
                }
                ImportMode::Update | ImportMode::UpdateIfMatchETag if exists.is_none() => {
                    errors.push(fail("DeviceNotFound", "device not found"))
                }
                ImportMode::UpdateIfMatchETag
                | ImportMode::CreateOrUpdateIfMatchETag
                | ImportMode::DeleteIfMatchETag
                    if exists.is_some_and(|d| !etag_ok(d)) =>
                {
                    errors.push(fail("PreconditionFailed", "etag mismatch"))
                }
                ImportMode::Delete | ImportMode::DeleteIfMatchETag => {
                    match devices.remove(&entry.id) {
                        Some(_) => dropped.push(entry.id.clone()),
                        None => errors.push(fail("DeviceNotFound", "device not found")),
                    }
                }
                _ => {
                    let mut device = Device::certificate_authority(&entry.id);
                    if let Some(auth) = entry.authentication.clone() {
                        device.authentication = auth;
                    }
                    device.status = entry.status;
                    device.generation_id = exists.map_or_else(
                        || format!("{:018}", rand::random::<u64>() % 10u64.pow(18)),
                        |d| d.generation_id.clone(),
                    );
                    device.etag = next_etag(&state);
                    if device.status == DeviceStatus::Disabled {
                        dropped.push(entry.id.clone());
                    }
                    devices.insert(entry.id.clone(), device);
                }
            }
        }
    }
    for id in &changed {
        state.journal_device(id);
    }
    for id in dropped {
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
