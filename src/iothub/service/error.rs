//! Why a call to IoT Hub's service API failed ([`CallError`]), read from the hub's answer the way
//! Microsoft's service SDKs read it: the status, the `iothub-errorcode` header and the
//! `errorCode` inside the body (reference §4.3), so a method to an offline device (404103) is
//! told apart from one to an unknown device (404001), and a device that did not answer (504101)
//! from a hub that did not.

use std::time::Duration;

use crate::metrics::Outcome;

use super::super::rest::{Refusal, RestFailure};

/// Why a service call failed. [`kind`](Self::kind) is the label metrics count;
/// [`outcome`](Self::outcome) the outcome a timed call is recorded with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The device is not connected (404, `DeviceNotOnline`, 404103), after the hub waited up to
    /// the call's connect timeout for it.
    #[error("the device is not online (404103 DeviceNotOnline)")]
    Offline,
    /// The device did not answer the method within its response timeout (504, 504101).
    #[error("the device did not answer in time (504101 GatewayTimeout)")]
    DeviceTimeout,
    /// The hub's throttle refused the call (429); retry no sooner than `retry_after`.
    #[error("throttled by the hub (429 {code})")]
    Throttled {
        code: String,
        retry_after: Option<Duration>,
    },
    /// `If-Match` named an etag the twin no longer has (412, 412001).
    #[error("the twin changed since its etag was read (412 PreconditionFailed)")]
    PreconditionFailed,
    /// Any other refusal.
    #[error("the hub answered HTTP {status} ({code}): {message}")]
    Status {
        status: u16,
        /// IoT Hub's error name (`DeviceNotFound`, `ArgumentInvalid`, …) or number.
        code: String,
        message: String,
    },
    #[error("cannot reach the hub: {0}")]
    Transport(String),
    /// The hub did not answer within the client's own timeout.
    #[error("no answer from the hub in time")]
    NoAnswer,
    /// A 2xx answer whose body is not what the API promises.
    #[error("the hub's answer was not understood: {0}")]
    Malformed(String),
    /// The client could not be built, or its credentials could not make a token.
    #[error("service client setup: {0}")]
    Setup(String),
}

impl CallError {
    /// The short label counted in metrics (`offline`, `device_timeout`, `http_404`, …).
    pub fn kind(&self) -> String {
        match self {
            CallError::Offline => "offline".into(),
            CallError::DeviceTimeout => "device_timeout".into(),
            CallError::Throttled { .. } => "throttled".into(),
            CallError::PreconditionFailed => "precondition_failed".into(),
            CallError::Status { status, .. } => format!("http_{status}"),
            CallError::Transport(_) => "transport".into(),
            CallError::NoAnswer => "no_answer".into(),
            CallError::Malformed(_) => "malformed_reply".into(),
            CallError::Setup(_) => "setup".into(),
        }
    }

    /// The outcome a timed call that failed this way is recorded with.
    pub fn outcome(&self) -> Outcome {
        match self {
            CallError::Offline => Outcome::Offline,
            CallError::DeviceTimeout | CallError::NoAnswer => Outcome::Timeout,
            CallError::Throttled { .. } => Outcome::Throttled,
            CallError::PreconditionFailed => Outcome::Rejected,
            CallError::Status { status, .. } if (400..500).contains(status) => Outcome::Rejected,
            _ => Outcome::Error,
        }
    }

    /// How long the hub asked the caller to wait, for a throttled call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<RestFailure> for CallError {
    fn from(f: RestFailure) -> Self {
        match f {
            RestFailure::Transport(e) => CallError::Transport(e),
            RestFailure::Timeout => CallError::NoAnswer,
            RestFailure::Credentials(e) => CallError::Setup(e),
            RestFailure::Refused(r) => refusal(r),
        }
    }
}

/// A non-2xx answer, classified.
fn refusal(r: Refusal) -> CallError {
    let number = error_number(&r.body);
    let named = |name: &str| r.code.eq_ignore_ascii_case(name);
    match r.status {
        404 if number == Some(404103) || named("DeviceNotOnline") => CallError::Offline,
        504 => CallError::DeviceTimeout,
        429 => CallError::Throttled {
            code: match r.code.is_empty() {
                true => number.map_or_else(|| "ThrottlingException".into(), |n| n.to_string()),
                false => r.code,
            },
            retry_after: r.retry_after,
        },
        412 => CallError::PreconditionFailed,
        status => CallError::Status {
            status,
            code: match (r.code.is_empty(), number) {
                (false, _) => r.code,
                (true, Some(n)) => n.to_string(),
                (true, None) => String::new(),
            },
            message: error_message(&r.body),
        },
    }
}

/// IoT Hub's error body, in either of its forms: `{"errorCode":404103,…}`, or the older
/// `{"Message":"{\"errorCode\":404103,…}","ExceptionMessage":…}` with the JSON inside a string,
/// or `{"Message":"ErrorCode:DeviceNotFound;…"}`.
fn error_object(body: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    if v.get("errorCode").is_some() {
        return Some(v);
    }
    let inner = v.get("Message")?.as_str()?;
    serde_json::from_str::<serde_json::Value>(inner)
        .ok()
        .filter(|i| i.is_object())
        .or(Some(v))
}

/// The numeric `errorCode` of an error body (e.g. 404103), if it has one.
pub(super) fn error_number(body: &str) -> Option<u32> {
    let v = error_object(body)?;
    match v.get("errorCode")? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The human part of an error body (its `message`, else the body itself), cut short.
fn error_message(body: &str) -> String {
    let message = error_object(body).and_then(|v| {
        ["message", "Message"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|m| m.as_str()).map(str::to_string))
    });
    message
        .unwrap_or_else(|| body.to_string())
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: &str, body: &str) -> CallError {
        CallError::from(RestFailure::Refused(Refusal {
            status,
            code: code.into(),
            body: body.into(),
            retry_after: Some(Duration::from_secs(2)),
        }))
    }

    #[test]
    fn answers_are_classified_as_the_sdks_read_them() {
        let inner = r#"{"Message":"{\"errorCode\":404103,\"message\":\"Timed out waiting for device to connect.\",\"trackingId\":\"x\"}","ExceptionMessage":""}"#;
        assert!(matches!(refused(404, "", inner), CallError::Offline));
        let flat = r#"{"errorCode":404103,"message":"offline"}"#;
        assert!(matches!(refused(404, "", flat), CallError::Offline));
        assert!(matches!(
            refused(404, "DeviceNotOnline", "not json"),
            CallError::Offline
        ));
        let unknown = refused(
            404,
            "DeviceNotFound",
            r#"{"errorCode":404001,"message":"no such device"}"#,
        );
        assert_eq!(unknown.kind(), "http_404");
        assert_eq!(unknown.outcome(), Outcome::Rejected);
        assert!(unknown.to_string().contains("no such device"), "{unknown}");
        let timeout = refused(504, "GatewayTimeout", r#"{"errorCode":504101}"#);
        assert_eq!(timeout.outcome(), Outcome::Timeout);
        let throttled = refused(429, "ThrottlingException", "");
        assert_eq!(throttled.outcome(), Outcome::Throttled);
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(
            refused(412, "PreconditionFailed", "").outcome(),
            Outcome::Rejected
        );
        assert_eq!(refused(500, "", "{}").outcome(), Outcome::Error);
        assert_eq!(
            CallError::from(RestFailure::Timeout).outcome(),
            Outcome::Timeout
        );
        assert_eq!(error_number(r#"{"errorCode":"400004"}"#), Some(400004));
        assert_eq!(error_number("<html>"), None);
    }
}
