//! DPS's answers as the device reads them: the response topic
//! (`$dps/registrations/res/{status}/?$rid=…&retry-after=…`), the operation body, and what the
//! device does next (poll, send again after a 429, or stop with an assignment or an error).

use std::time::Duration;

use serde::Deserialize;

use super::types::{Assignment, Polling, ProvisioningError};

const RESPONSE_PREFIX: &str = "$dps/registrations/res/";

/// One request to DPS, sent again as it is after a 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    Register,
    Poll { operation_id: String },
}

/// A `$dps/registrations/res/{status}/?$rid=…&retry-after=…` publish.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub status: u16,
    pub rid: String,
    pub retry_after: Option<Duration>,
}

pub(super) fn parse_response(topic: &str) -> Option<Response> {
    let rest = topic.strip_prefix(RESPONSE_PREFIX)?;
    let (status, query) = rest.split_once("/?")?;
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    };
    Some(Response {
        status: status.parse().ok()?,
        rid: param("$rid")?.to_string(),
        retry_after: param("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationBody {
    operation_id: Option<String>,
    status: Option<String>,
    registration_state: Option<StateBody>,
    /// Error bodies (4xx/5xx).
    error_code: Option<u64>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateBody {
    assigned_hub: Option<String>,
    device_id: Option<String>,
    substatus: Option<String>,
    error_code: Option<u64>,
    error_message: Option<String>,
    x509: Option<X509Body>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct X509Body {
    enrollment_group_id: Option<String>,
}

/// What a registration has gone through so far.
#[derive(Default)]
pub(super) struct Progress {
    pub polls: u32,
    pub throttled: u32,
    /// `retry-after` of the last answer when it was a 429.
    pub last_throttle: Option<Duration>,
}

/// What to do after an answer.
pub(super) enum Next {
    Done(Result<Assignment, ProvisioningError>),
    /// Send this request after this wait.
    Send(Request, Duration),
}

/// What an answer to `current` means.
pub(super) fn next(
    polling: &Polling,
    current: &Request,
    response: &Response,
    body: &[u8],
    progress: &mut Progress,
) -> Next {
    let parsed: Option<OperationBody> = serde_json::from_slice(body).ok();
    progress.last_throttle = None;
    if response.status >= 429 {
        let retry_after = response.retry_after.unwrap_or(polling.default_interval);
        if response.status == 429 {
            progress.throttled += 1;
            progress.last_throttle = Some(retry_after);
        }
        if response.status == 429 && !polling.retry_throttled {
            return Next::Done(Err(ProvisioningError::Throttled { retry_after }));
        }
        // 429 and 5xx are retried after retry-after, as the SDKs do.
        return Next::Send(current.clone(), polling.wait(response.retry_after));
    }
    let Some(op) = parsed else {
        return Next::Done(Err(ProvisioningError::Protocol(format!(
            "{} answer is not JSON",
            response.status
        ))));
    };
    if !(200..300).contains(&response.status) {
        return Next::Done(Err(ProvisioningError::Failed {
            status: response.status,
            code: op.error_code,
            message: op.message.unwrap_or_default(),
        }));
    }
    Next::Done(match op.status.as_deref() {
        Some("assigning") => {
            let Some(operation_id) = op.operation_id else {
                return Next::Done(Err(ProvisioningError::Protocol(
                    "assigning without an operationId".into(),
                )));
            };
            let wait = polling.wait(response.retry_after);
            return Next::Send(Request::Poll { operation_id }, wait);
        }
        Some("assigned") => assignment(op),
        Some("disabled") => Err(ProvisioningError::Disabled),
        Some("failed") => {
            let state = op.registration_state;
            Err(ProvisioningError::Failed {
                status: response.status,
                code: state.as_ref().and_then(|s| s.error_code),
                message: state.and_then(|s| s.error_message).unwrap_or_default(),
            })
        }
        other => Err(ProvisioningError::Protocol(format!(
            "registration status {other:?}"
        ))),
    })
}

/// The assignment in a 200 `assigned` answer.
fn assignment(op: OperationBody) -> Result<Assignment, ProvisioningError> {
    let missing = |what: &str| ProvisioningError::Protocol(format!("assigned without {what}"));
    let state = op
        .registration_state
        .ok_or_else(|| missing("registrationState"))?;
    Ok(Assignment {
        assigned_hub: state.assigned_hub.ok_or_else(|| missing("assignedHub"))?,
        device_id: state.device_id.ok_or_else(|| missing("deviceId"))?,
        status: "assigned".into(),
        substatus: state.substatus,
        enrollment_group_id: state.x509.and_then(|x| x.enrollment_group_id),
        operation_id: op.operation_id.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_topics_parse() {
        assert_eq!(
            parse_response("$dps/registrations/res/202/?$rid=3&retry-after=3"),
            Some(Response {
                status: 202,
                rid: "3".into(),
                retry_after: Some(Duration::from_secs(3)),
            })
        );
        assert_eq!(
            parse_response("$dps/registrations/res/200/?$rid=12").map(|r| r.retry_after),
            Some(None)
        );
        assert_eq!(parse_response("$dps/registrations/res/abc/?$rid=1"), None);
        assert_eq!(parse_response("devices/x/messages/devicebound/a=b"), None);
    }
}
