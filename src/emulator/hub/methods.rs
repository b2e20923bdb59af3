//! Direct methods (reference §3, "IoT Hub service side"): `POST /twins/{id}/methods` with
//! `methodName`, `payload`, `responseTimeoutInSeconds` (5–300, default 30) and
//! `connectTimeoutInSeconds` (0–300, default 0). The hub waits up to the connect timeout for the
//! device to be connected and subscribed to `$iothub/methods/POST/#`, publishes the request at
//! QoS 0 on `$iothub/methods/POST/{name}/?$rid={rid}`, and waits up to the response timeout for
//! `$iothub/methods/res/{status}/?$rid={rid}`: 200 `{"status", "payload"}`. A device that is not
//! there gets 404 DeviceNotOnline (404103); no answer in time 504 GatewayTimeout (504101).
//!
//! An answer the hub cannot pass on (a payload that is not JSON, a status that is not a number,
//! over 128 KB) fails the call with 502 InvalidResponseWhileProxying, the error the C# service SDK
//! reported for non-JSON device answers (azure-iot-sdk-c PR #6; the numeric code 502001 is our
//! inference). Answers for no waiting call (unknown, late or another device's `$rid`) are
//! counted and dropped. Neither ends the device's session. Payloads over 128 KB are refused
//! with 413 MessageTooLarge; calls pass the direct-method throttle in 4 KB units.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;
use serde::Deserialize;
use serde_json::Value;

use super::outbox::{Outbox, Subscription};
use super::pending::DeviceAnswer;
use super::rest::{
    ApiVersion, argument_invalid, authorize, device_not_found, error, format_error, not_in_tier,
    throttle, too_large,
};
use super::state::{HubState, bump};
use super::throttle::{Class, METHOD_METER_BYTES};
use crate::sync::lock;

/// IoT Hub's limit on a method's request and response payloads.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Where device answers arrive.
pub(super) const RESPONSE_PREFIX: &str = "$iothub/methods/res/";
const RESPONSE_TIMEOUT: std::ops::RangeInclusive<u64> = 5..=300;
const CONNECT_TIMEOUT: std::ops::RangeInclusive<u64> = 0..=300;

pub(super) fn routes() -> axum::Router<Arc<HubState>> {
    axum::Router::new().route("/twins/{id}/methods", post(invoke))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MethodRequest {
    method_name: Option<String>,
    #[serde(default)]
    payload: Value,
    response_timeout_in_seconds: Option<u64>,
    connect_timeout_in_seconds: Option<u64>,
}

/// A checked invocation.
struct Call {
    name: String,
    payload: Vec<u8>,
    response_timeout: Duration,
    connect_timeout: Duration,
}

async fn invoke(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, &format!("twins/{id}/methods")) {
        return *r;
    }
    if !state.throttles.limits.cloud_to_device {
        return not_in_tier();
    }
    let call = match checked(&state, &body) {
        Ok(call) => call,
        Err(r) => return *r,
    };
    if !lock(&state.devices).contains_key(&id) {
        return device_not_found(&id);
    }
    let meters = call.payload.len().div_ceil(METHOD_METER_BYTES).max(1);
    let cost = u32::try_from(meters).unwrap_or(u32::MAX);
    if let Err(r) = throttle(&state, Class::DirectMethod, cost).await {
        return *r;
    }
    bump(&state.service.methods_invoked);
    let Some(outbox) = wait_online(&state, &id, call.connect_timeout).await else {
        bump(&state.service.methods_offline);
        return error(
            StatusCode::NOT_FOUND,
            404103,
            "DeviceNotOnline",
            &format!("Timed out waiting for device {id} to connect."),
        );
    };
    deliver(&state, &id, &outbox, call).await
}

/// The body as a call, or the 400/413 to answer.
fn checked(state: &HubState, body: &[u8]) -> Result<Call, Box<Response>> {
    let request: MethodRequest = serde_json::from_slice(body)
        .map_err(|e| Box::new(format_error(&format!("method request: {e}"))))?;
    let name = request.method_name.unwrap_or_default();
    let valid_name = !name.is_empty()
        && name.len() <= 128
        && !name.chars().any(|c| "/?#+".contains(c) || c.is_control());
    if !valid_name {
        return Err(Box::new(argument_invalid(
            "methodName must be 1 to 128 characters without '/', '?', '#' or '+'",
        )));
    }
    let response = request.response_timeout_in_seconds.unwrap_or(30);
    let connect = request.connect_timeout_in_seconds.unwrap_or(0);
    if !RESPONSE_TIMEOUT.contains(&response) || !CONNECT_TIMEOUT.contains(&connect) {
        return Err(Box::new(argument_invalid(
            "responseTimeoutInSeconds must be 5 to 300 and connectTimeoutInSeconds 0 to 300",
        )));
    }
    let payload = request.payload.to_string().into_bytes();
    if payload.len() > MAX_PAYLOAD_BYTES {
        bump(&state.service.too_large);
        return Err(Box::new(too_large(&format!(
            "method payload of {} bytes is over the limit of {MAX_PAYLOAD_BYTES}",
            payload.len()
        ))));
    }
    Ok(Call {
        name,
        payload,
        response_timeout: Duration::from_secs(response),
        connect_timeout: Duration::from_secs(connect),
    })
}

/// The outbox of `id`'s connection once it is connected and subscribed to methods, waiting up to
/// `limit` for that; `None` if it is not by then.
async fn wait_online(state: &HubState, id: &str, limit: Duration) -> Option<Arc<Outbox>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // Registered before looking, so a subscription in between is not missed.
        let subscribed = state.presence.notified();
        tokio::pin!(subscribed);
        subscribed.as_mut().enable();
        let outbox = state.outbox(id);
        if let Some(outbox) = outbox.filter(|o| o.subscribed(Subscription::Methods)) {
            return Some(outbox);
        }
        tokio::select! {
            _ = subscribed => {}
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Publishes the request to the device and waits for its answer.
async fn deliver(state: &HubState, id: &str, outbox: &Outbox, call: Call) -> Response {
    let (rid, answer) = state.methods.register(id);
    let topic = format!("$iothub/methods/POST/{}/?$rid={rid}", call.name);
    if !outbox.push(Publish::new(topic, QoS::AtMostOnce, call.payload)) {
        // A device that stopped reading never sees the request: the call times out.
        bump(&state.service.pushes_dropped);
    }
    match tokio::time::timeout(call.response_timeout, answer).await {
        Ok(Ok(DeviceAnswer::Answered { status, payload })) => {
            bump(&state.service.methods_answered);
            Json(serde_json::json!({ "status": status, "payload": payload })).into_response()
        }
        Ok(Ok(DeviceAnswer::Malformed(why))) => error(
            StatusCode::BAD_GATEWAY,
            502001,
            "InvalidResponseWhileProxying",
            &format!(
                "The device's response to method '{}' was invalid: {why}",
                call.name
            ),
        ),
        Ok(Err(_)) | Err(_) => {
            state.methods.forget(&rid);
            bump(&state.service.methods_timed_out);
            error(
                StatusCode::GATEWAY_TIMEOUT,
                504101,
                "GatewayTimeout",
                &format!(
                    "Timed out waiting for the response from device {id} to method '{}'.",
                    call.name
                ),
            )
        }
    }
}

/// A device published on `$iothub/methods/res/…`: hands its answer to the waiting call.
pub(super) fn device_answered(state: &HubState, device: &str, topic: &str, payload: &[u8]) {
    let rest = topic.strip_prefix(RESPONSE_PREFIX).unwrap_or(topic);
    let (status, query) = rest.split_once("/?").unwrap_or((rest, ""));
    let rid = query.split('&').find_map(|p| p.strip_prefix("$rid="));
    let answer = parse_answer(status, payload);
    let malformed = matches!(answer, DeviceAnswer::Malformed(_));
    let matched = rid.is_some_and(|rid| state.methods.resolve(device, rid, answer));
    match (matched, malformed) {
        (false, _) => bump(&state.service.method_responses_unmatched),
        (true, true) => bump(&state.service.method_responses_malformed),
        (true, false) => {}
    }
}

fn parse_answer(status: &str, payload: &[u8]) -> DeviceAnswer {
    let Ok(status) = status.parse::<i32>() else {
        let shown: String = status.chars().take(32).collect();
        return DeviceAnswer::Malformed(format!("status {shown:?} is not a number"));
    };
    if payload.len() > MAX_PAYLOAD_BYTES {
        return DeviceAnswer::Malformed(format!(
            "payload of {} bytes is over the limit of {MAX_PAYLOAD_BYTES}",
            payload.len()
        ));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return DeviceAnswer::Answered {
            status,
            payload: Value::Null,
        };
    }
    match serde_json::from_slice(payload) {
        Ok(payload) => DeviceAnswer::Answered { status, payload },
        Err(e) => DeviceAnswer::Malformed(format!("payload is not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_answers_parse_or_are_malformed() {
        assert_eq!(
            parse_answer("200", br#"{"ok":true}"#),
            DeviceAnswer::Answered {
                status: 200,
                payload: serde_json::json!({"ok": true})
            }
        );
        assert_eq!(
            parse_answer("-3", b""),
            DeviceAnswer::Answered {
                status: -3,
                payload: Value::Null
            }
        );
        for (status, payload) in [("200", &b"not json"[..]), ("ok", b"{}"), ("", b"1")] {
            assert!(
                matches!(parse_answer(status, payload), DeviceAnswer::Malformed(_)),
                "{status:?} {payload:?}"
            );
        }
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            parse_answer("200", &big),
            DeviceAnswer::Malformed(_)
        ));
    }
}
