//! What every REST call on the hub shares (registry, twins, methods, statistics, queries and CA
//! upload alike): the required `api-version`, authorisation by a service SAS token or (emulator
//! mode) an Azure AD bearer token, IoT Hub's error bodies with the `iothub-errorcode` header, the
//! throttles (429 with `Retry-After`) and the daily quota, and the `If-Match` header.
//!
//! Error codes follow the C# service SDK's `ErrorCode` and IoT Hub's error-code page:
//! 400001 InvalidProtocolVersion, 400004 ArgumentInvalid, 400006 IotHubFormatError (a body that
//! does not parse).

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::state::HubState;
use super::throttle::{Admission, Class};
use crate::iothub::sas;

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
            400001,
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

/// Applies `class`'s throttle (a request costing `cost` units) and the daily quota: delays within
/// the shaping window, then 429 with `Retry-After`; 403002 once the quota is spent.
pub(super) async fn throttle(
    state: &HubState,
    class: Class,
    cost: u32,
) -> Result<(), Box<Response>> {
    if state.throttles.quota_spent() {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            403002,
            "IotHubQuotaExceeded",
            "Total number of messages on IotHub exceeded the allocated quota",
        )));
    }
    match state.throttles.admit_weighted(class, cost) {
        Admission::After(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Admission::Refuse(wait) => Err(Box::new(throttled(wait))),
    }
}

/// 429 ThrottlingException with `Retry-After` in whole seconds (at least 1).
pub(super) fn throttled(wait: std::time::Duration) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        429001,
        "ThrottlingException",
        "Request was throttled",
    );
    if let Ok(v) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Authorises a request on `resource`, then applies the registry throttle: every registry call
/// does both.
pub(super) async fn admit(
    state: &HubState,
    headers: &HeaderMap,
    query: &ApiVersion,
    resource: &str,
) -> Result<(), Box<Response>> {
    admit_as(state, headers, query, resource, Class::Registry).await
}

/// Like [`admit`], with `class`'s throttle.
pub(super) async fn admit_as(
    state: &HubState,
    headers: &HeaderMap,
    query: &ApiVersion,
    resource: &str,
    class: Class,
) -> Result<(), Box<Response>> {
    authorize(state, headers, query, resource)?;
    throttle(state, class, 1).await
}

/// 400004 ArgumentInvalid: a body or parameter the hub cannot use.
pub(super) fn argument_invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, 400004, "ArgumentInvalid", message)
}

/// 400006 IotHubFormatError: a body that is not the JSON the call takes.
pub(super) fn format_error(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        400006,
        "IotHubFormatError",
        message,
    )
}

/// 404001 DeviceNotFound.
pub(super) fn device_not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        404001,
        "DeviceNotFound",
        &format!("Device {id} not found."),
    )
}

/// 412001 PreconditionFailed: `If-Match` names another etag.
pub(super) fn etag_mismatch() -> Response {
    error(
        StatusCode::PRECONDITION_FAILED,
        412001,
        "PreconditionFailed",
        "ETag mismatch",
    )
}

/// 413001 MessageTooLarge.
pub(super) fn too_large(message: &str) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        413001,
        "MessageTooLarge",
        message,
    )
}

/// 400003 InvalidOperation: what a basic-tier hub answers for twins and direct methods, which
/// the tier lacks (inferred: the reference documents only that basic tiers have none).
pub(super) fn not_in_tier() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        400003,
        "InvalidOperation",
        "Device twins and direct methods are not available in the basic tier",
    )
}

/// The `If-Match` header's etag, without quotes.
pub(super) fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().trim_matches('"').to_string())
}
