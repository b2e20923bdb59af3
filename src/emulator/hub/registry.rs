//! The hub's registry REST API (reference §4): `PUT`/`GET`/`DELETE /devices/{id}?api-version=...`,
//! authorised by a service SAS token, with IoT Hub's error bodies and `iothub-errorcode` header.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use base64::Engine;
use serde::Deserialize;

use super::HubState;
use crate::iothub::registry::{Device, DeviceStatus};
use crate::iothub::sas;

pub(super) fn router(state: Arc<HubState>) -> axum::Router {
    axum::Router::new()
        .route(
            "/devices/{id}",
            put(put_device).get(get_device).delete(delete_device),
        )
        .with_state(state)
}

#[derive(Deserialize)]
struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// An IoT Hub error: status, numeric code and name (`404001`, `DeviceNotFound`).
fn error(status: StatusCode, code: u32, name: &'static str, message: &str) -> Response {
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

/// Checks the SAS token and the api-version; `Err` is the response to send.
fn authorize(
    state: &HubState,
    headers: &HeaderMap,
    query: &ApiVersion,
    device_id: &str,
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
    let resource = format!("{}/devices/{device_id}", state.host_name);
    sas::verify(&token, &state.policy_key, &resource, now).map_err(|r| unauthorized(&r.to_string()))
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
    if let Err(r) = authorize(&state, &headers, &query, &id) {
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
    if disable {
        // Disabling a connected device drops it, as IoT Hub does.
        state.drop_connection(&id);
    }
    Json(device).into_response()
}

async fn get_device(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, &id) {
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
    if let Err(r) = authorize(&state, &headers, &query, &id) {
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
    state.drop_connection(&id);
    StatusCode::NO_CONTENT.into_response()
}
