//! The service's twin and statistics calls (reference §4, "IoT Hub service side"):
//! `GET`/`PATCH`/`PUT /twins/{id}` and `GET /statistics/devices`, `/statistics/service`.
//!
//! Twins come back as IoT Hub's twin JSON ([`super::twin::Twin::service_json`]) with the twin's
//! etag also in the quoted `ETag` header. `PATCH` merges tags and desired properties (`null`
//! deletes), `PUT` replaces both; either takes `If-Match` (quoted etag or `*`; 412 on a stale
//! one) and neither may write reported properties. A desired change is pushed to the connected
//! device on `$iothub/twin/PATCH/properties/desired/?$version=N` if it subscribed to that topic.
//! Reads pass the twin-read throttle, updates the twin-update throttle.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;
use serde_json::{Map, Value};

use super::device_twin::desired_notification;
use super::outbox::Subscription;
use super::rest::{
    ApiVersion, admit_as, argument_invalid, authorize, device_not_found, etag_mismatch,
    format_error, if_match, not_in_tier, too_large,
};
use super::state::{HubState, bump};
use super::throttle::Class;
use super::twin::{Twin, TwinError};
use crate::iothub::identity::{Device, DeviceStatus};
use crate::sync::lock;

pub(super) fn routes() -> axum::Router<Arc<HubState>> {
    axum::Router::new()
        .route(
            "/twins/{id}",
            get(get_twin).patch(patch_twin).put(replace_twin),
        )
        .route("/statistics/devices", get(device_statistics))
        .route("/statistics/service", get(service_statistics))
}

/// The twin JSON of `device` with its etag in the `ETag` header.
fn twin_response(state: &HubState, twin: &Twin, device: &Device) -> Response {
    let mut response = Json(twin.service_json(&state.device_view(device))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", twin.etag())) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

async fn get_twin(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    let resource = format!("twins/{id}");
    if let Err(r) = admit_as(&state, &headers, &query, &resource, Class::TwinRead).await {
        return *r;
    }
    if !state.throttles.limits.cloud_to_device {
        return not_in_tier();
    }
    let Some(device) = lock(&state.devices).get(&id).cloned() else {
        return device_not_found(&id);
    };
    let twin = lock(&state.twins).entry(id).or_default().clone();
    bump(&state.service.twin_reads);
    twin_response(&state, &twin, &device)
}

/// What a service update asks: tags and desired properties, each possibly absent.
struct Update {
    tags: Option<Map<String, Value>>,
    desired: Option<Map<String, Value>>,
}

/// Why a twin body cannot be used.
enum BadBody {
    /// Not JSON, or not an object: 400006 IotHubFormatError.
    Format(String),
    /// A section of the wrong type, or reported properties: 400004 ArgumentInvalid.
    Invalid(String),
}

impl BadBody {
    fn response(self) -> Response {
        match self {
            BadBody::Format(m) => format_error(&m),
            BadBody::Invalid(m) => argument_invalid(&m),
        }
    }
}

/// Reads a twin body: an object whose `tags` and `properties.desired` are objects when present,
/// and whose `properties.reported` holds nothing but read-only members.
fn update_from(body: &[u8]) -> Result<Update, BadBody> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| BadBody::Format(format!("twin JSON: {e}")))?;
    let Value::Object(mut body) = body else {
        return Err(BadBody::Format("twin JSON must be an object".into()));
    };
    let section = |v: Option<Value>, name: &str| match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(BadBody::Invalid(format!("{name} must be a JSON object"))),
    };
    let tags = section(body.remove("tags"), "tags")?;
    let mut properties = section(body.remove("properties"), "properties")?.unwrap_or_default();
    let desired = section(properties.remove("desired"), "properties.desired")?;
    let reported = section(properties.remove("reported"), "properties.reported")?;
    if reported.is_some_and(|r| r.keys().any(|k| !k.starts_with('$'))) {
        return Err(BadBody::Invalid(
            "reported properties are written by the device only".into(),
        ));
    }
    Ok(Update { tags, desired })
}

async fn patch_twin(
    state: State<Arc<HubState>>,
    id: Path<String>,
    query: Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_twin(state, id, query, headers, body, false).await
}

async fn replace_twin(
    state: State<Arc<HubState>>,
    id: Path<String>,
    query: Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_twin(state, id, query, headers, body, true).await
}

/// A service PATCH (`replace` false) or PUT of the twin of `id`.
async fn update_twin(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
    replace: bool,
) -> Response {
    let resource = format!("twins/{id}");
    if let Err(r) = admit_as(&state, &headers, &query, &resource, Class::TwinUpdate).await {
        return *r;
    }
    if !state.throttles.limits.cloud_to_device {
        return not_in_tier();
    }
    let update = match update_from(&body) {
        Ok(u) => u,
        Err(bad) => {
            bump(&state.service.invalid_updates);
            return bad.response();
        }
    };
    let Some(device) = lock(&state.devices).get(&id).cloned() else {
        return device_not_found(&id);
    };
    let mut twins = lock(&state.twins);
    let twin = twins.entry(id.clone()).or_default();
    if let Some(etag) = if_match(&headers)
        && etag != "*"
        && etag != twin.etag()
    {
        return etag_mismatch();
    }
    let applied = match replace {
        false => twin.patch(update.tags, update.desired),
        true => twin.replace(
            update.tags.unwrap_or_default(),
            update.desired.unwrap_or_default(),
        ),
    };
    let desired = match applied {
        Ok(desired) => desired,
        Err(e) => return refused(&state, &e),
    };
    bump(&state.service.twin_updates);
    if let Some(patch) = desired {
        // Pushed under the twins lock, so notifications reach the device in version order.
        push_desired(&state, &id, patch, twin.desired_version);
    }
    let twin = twin.clone();
    drop(twins);
    twin_response(&state, &twin, &device)
}

/// 413 for a section over its limit, else 400; counted.
fn refused(state: &HubState, e: &TwinError) -> Response {
    match e {
        TwinError::TooLarge { .. } => {
            bump(&state.service.too_large);
            too_large(&e.to_string())
        }
        _ => {
            bump(&state.service.invalid_updates);
            argument_invalid(&e.to_string())
        }
    }
}

/// Sends a desired-properties change to `id`'s connection, if it subscribed to them.
fn push_desired(state: &HubState, id: &str, patch: Map<String, Value>, version: u64) {
    let Some(outbox) = state.outbox(id) else {
        return;
    };
    if !outbox.subscribed(Subscription::Desired) {
        return;
    }
    let (topic, body) = desired_notification(patch, version);
    if outbox.push(Publish::new(topic, QoS::AtMostOnce, body)) {
        bump(&state.service.desired_pushed);
    } else {
        bump(&state.service.pushes_dropped);
    }
}

async fn device_statistics(
    State(state): State<Arc<HubState>>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "statistics/devices") {
        return *r;
    }
    let (total, enabled) = {
        let devices = lock(&state.devices);
        let enabled = devices
            .values()
            .filter(|d| d.status == DeviceStatus::Enabled)
            .count();
        (devices.len(), enabled)
    };
    Json(serde_json::json!({
        "totalDeviceCount": total,
        "enabledDeviceCount": enabled,
        "disabledDeviceCount": total - enabled,
    }))
    .into_response()
}

async fn service_statistics(
    State(state): State<Arc<HubState>>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "statistics/service") {
        return *r;
    }
    let connected = lock(&state.live).len();
    Json(serde_json::json!({ "connectedDeviceCount": connected })).into_response()
}
