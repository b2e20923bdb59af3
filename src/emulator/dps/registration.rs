//! The registration flow behind `iotdps-register` and `iotdps-get-operationstatus` (reference
//! §6): a register request is checked against the enrolments at once (an untrusted certificate
//! gets 401 there and then), answered 202 `assigning` with an operation id, and assigned in the
//! background: the hub is chosen and the device identity created in it before the operation
//! completes. Polls see 202 `assigning` until then, and 200 with the registration state after.
//! It keeps the registration records ([`super::records`]) up to date.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::allocation;
use super::enrollment::ProvisioningStatus;
use super::error::{self, DpsError, now_utc};
use super::matching::{Matched, Source};
use super::records::{Record, RegistrationState, RegistrationStatus, X509Registration};
use super::state::DpsState;
use super::throttle::retry_after_secs;
use crate::sync::{lock, read};

/// An answer on `$dps/registrations/res/{status}/?$rid=…[&retry-after=…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

impl From<DpsError> for Reply {
    fn from(e: DpsError) -> Self {
        Reply {
            status: e.status,
            retry_after: None,
            body: e.body(),
        }
    }
}

fn throttled(wait: std::time::Duration) -> Reply {
    Reply {
        retry_after: Some(retry_after_secs(wait)),
        ..DpsError::throttled().into()
    }
}

fn new_etag() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\"{}\"", uuid::Uuid::new_v4()))
}

/// An operation id in DPS's shape, `{n}.{16 hex}.{uuid}`.
fn new_operation_id() -> String {
    format!("4.{:016x}.{}", rand::random::<u64>(), uuid::Uuid::new_v4())
}

/// The body of an answer about an operation still being assigned.
fn assigning_body(operation_id: &str, registration_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "operationId": operation_id,
        "status": "assigning",
        "registrationState": {"registrationId": registration_id, "status": "assigning"},
    }))
    .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    registration_id: Option<String>,
    /// Custom data for custom allocation; accepted and not used.
    #[allow(dead_code)]
    payload: Option<serde_json::Value>,
}

/// `PUT iotdps-register` from `registration_id`, who presented `chain` at the TLS handshake.
pub(super) fn register(
    state: &Arc<DpsState>,
    registration_id: &str,
    chain: &[CertificateDer<'static>],
    body: &[u8],
) -> Reply {
    state.counters.registrations.fetch_add(1, Ordering::Relaxed);
    if let Err(wait) = state.throttles.register() {
        return throttled(wait);
    }
    let parsed: RegisterBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            state.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return DpsError::bad_request(format!("The request body is not valid: {e}")).into();
        }
    };
    match parsed.registration_id.as_deref() {
        Some(id) if id == registration_id => {}
        Some(_) => {
            state.counters.malformed.fetch_add(1, Ordering::Relaxed);
            let msg = "The registrationId in the body differs from the connection's.";
            return DpsError::new(400, error::REGISTRATION_ID_MISMATCH, msg).into();
        }
        None => {
            state.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return DpsError::bad_request("registrationId is required").into();
        }
    }
    let Some(matched) = read(&state.enrollments).find(registration_id, chain) else {
        state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        return DpsError::unauthorized().into();
    };
    let operation_id = start(state, registration_id);
    let task_state = state.clone();
    let (id, op) = (registration_id.to_string(), operation_id.clone());
    let delay = state.config.assignment_delay;
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        assign(&task_state, &id, &op, &matched);
    });
    Reply {
        status: 202,
        retry_after: Some(state.config.retry_after_secs),
        body: assigning_body(&operation_id, registration_id),
    }
}

/// Opens an operation for `registration_id`, replacing any earlier one.
fn start(state: &DpsState, registration_id: &str) -> String {
    let operation_id = new_operation_id();
    let now = now_utc();
    let mut regs = lock(&state.registrations);
    let previous = regs.records.remove(registration_id);
    if let Some(p) = &previous {
        regs.operations.remove(&p.operation_id);
    }
    let record = Record {
        state: RegistrationState {
            x509: None,
            registration_id: registration_id.to_string(),
            created_date_time_utc: previous
                .as_ref()
                .map_or_else(|| now.clone(), |p| p.state.created_date_time_utc.clone()),
            assigned_hub: None,
            device_id: None,
            status: RegistrationStatus::Assigning,
            substatus: None,
            error_code: None,
            error_message: None,
            last_updated_date_time_utc: now,
            etag: new_etag(),
        },
        operation_id: operation_id.clone(),
        hub: previous.and_then(|p| p.hub),
    };
    regs.records.insert(registration_id.to_string(), record);
    regs.operations
        .insert(operation_id.clone(), registration_id.to_string());
    operation_id
}

/// Completes operation `operation_id`: the device is disabled, or assigned a hub whose registry
/// now holds its identity, or failed.
fn assign(state: &DpsState, registration_id: &str, operation_id: &str, matched: &Matched) {
    let previous = lock(&state.registrations)
        .records
        .get(registration_id)
        .and_then(|r| r.hub.clone());
    let outcome = match matched.status {
        ProvisioningStatus::Disabled => None,
        ProvisioningStatus::Enabled => {
            let hubs = read(&state.hubs).clone();
            Some(
                allocation::choose(matched, &hubs, registration_id, previous.as_deref()).and_then(
                    |d| {
                        d.hub.provision_device(&matched.device_id).map_err(|why| {
                            let msg = format!("The IoT hub refused the device identity: {why}");
                            DpsError::new(400, error::HUB_REFUSED, msg)
                        })?;
                        Ok(d)
                    },
                ),
            )
        }
    };
    let mut regs = lock(&state.registrations);
    let Some(record) = regs.records.get_mut(registration_id) else {
        return;
    };
    if record.operation_id != operation_id {
        return; // a newer register request took over
    }
    let s = &mut record.state;
    s.last_updated_date_time_utc = now_utc();
    s.etag = new_etag();
    s.x509 = Some(X509Registration {
        enrollment_group_id: match &matched.source {
            Source::Group(id) => Some(id.clone()),
            Source::Individual(_) => None,
        },
    });
    let c = &state.counters;
    match outcome {
        None => {
            s.status = RegistrationStatus::Disabled;
            c.disabled.fetch_add(1, Ordering::Relaxed);
        }
        Some(Err(e)) => {
            s.status = RegistrationStatus::Failed;
            s.error_code = Some(e.code);
            s.error_message = Some(e.message);
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
        Some(Ok(decision)) => {
            let hub = decision.hub.host_name().to_string();
            s.status = RegistrationStatus::Assigned;
            s.assigned_hub = Some(hub.clone());
            s.device_id = Some(matched.device_id.clone());
            s.substatus = Some(decision.substatus);
            record.hub = Some(hub.clone());
            c.assigned.fetch_add(1, Ordering::Relaxed);
            *lock(&c.per_hub).entry(hub).or_default() += 1;
        }
    }
}

/// `GET iotdps-get-operationstatus` for `operation_id` from `registration_id`.
pub(super) fn poll(state: &DpsState, registration_id: &str, operation_id: &str) -> Reply {
    state.counters.polls.fetch_add(1, Ordering::Relaxed);
    if let Err(wait) = state.throttles.poll(registration_id) {
        return throttled(wait);
    }
    let regs = lock(&state.registrations);
    let record = regs
        .operations
        .get(operation_id)
        .filter(|owner| owner.as_str() == registration_id)
        .and_then(|owner| regs.records.get(owner));
    let Some(record) = record else {
        state.counters.malformed.fetch_add(1, Ordering::Relaxed);
        return DpsError::not_found("Operation not found.").into();
    };
    if record.state.status == RegistrationStatus::Assigning {
        return Reply {
            status: 202,
            retry_after: Some(state.config.retry_after_secs),
            body: assigning_body(operation_id, registration_id),
        };
    }
    let body = serde_json::json!({
        "operationId": operation_id,
        "status": record.state.status,
        "registrationState": record.state,
    });
    Reply {
        status: 200,
        retry_after: None,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}
