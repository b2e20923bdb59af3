//! DPS's service REST API (api-version 2021-10-01) on HTTPS: `PUT`/`GET`/`DELETE`
//! `/enrollmentGroups/{id}` and `/individualEnrollments/{id}`, `GET`/`DELETE`
//! `/registrations/{id}`; authorised by a SAS token of the `provisioningserviceowner` policy
//! (`sr={dps host}`), throttled at DPS's operations limit, errors in DPS's shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::enrollment::{
    self, AllocationPolicy, EnrollmentGroup, IndividualEnrollment, Settings, Stored,
};
use super::error::{self, DpsError, now_utc};
use super::matching::Enrollments;
use super::state::{DpsState, SERVICE_POLICY};
use super::throttle::retry_after_secs;
use crate::iothub::sas;
use crate::sync::{lock, read, write};

pub(super) fn router(state: Arc<DpsState>) -> axum::Router {
    axum::Router::new()
        .route(
            "/enrollmentGroups/{id}",
            put(put_enrollment::<EnrollmentGroup>)
                .get(get_enrollment::<EnrollmentGroup>)
                .delete(delete_enrollment::<EnrollmentGroup>),
        )
        .route(
            "/individualEnrollments/{id}",
            put(put_enrollment::<IndividualEnrollment>)
                .get(get_enrollment::<IndividualEnrollment>)
                .delete(delete_enrollment::<IndividualEnrollment>),
        )
        .route(
            "/registrations/{id}",
            get(get_registration).delete(delete_registration),
        )
        .with_state(state)
}

/// What the handlers need to know of either kind of enrolment.
pub(super) trait Enrollment: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// `clientCertificates` (individual) rather than signing certificates (group).
    const INDIVIDUAL: bool;
    const WHAT: &'static str;
    fn id(&self) -> &str;
    fn settings(&mut self) -> &mut Settings;
    fn map(all: &mut Enrollments) -> &mut BTreeMap<String, Stored<Self>>;
}

impl Enrollment for EnrollmentGroup {
    const INDIVIDUAL: bool = false;
    const WHAT: &'static str = "Enrollment group";
    fn id(&self) -> &str {
        &self.enrollment_group_id
    }
    fn settings(&mut self) -> &mut Settings {
        &mut self.settings
    }
    fn map(all: &mut Enrollments) -> &mut BTreeMap<String, Stored<Self>> {
        &mut all.groups
    }
}

impl Enrollment for IndividualEnrollment {
    const INDIVIDUAL: bool = true;
    const WHAT: &'static str = "Individual enrollment";
    fn id(&self) -> &str {
        &self.registration_id
    }
    fn settings(&mut self) -> &mut Settings {
        &mut self.settings
    }
    fn map(all: &mut Enrollments) -> &mut BTreeMap<String, Stored<Self>> {
        &mut all.individuals
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

fn error_response(e: &DpsError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.body(),
    )
        .into_response()
}

fn json_response(value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Checks api-version, the SAS token and the operations throttle. `Err` is the response.
fn admit(
    state: &DpsState,
    headers: &HeaderMap,
    query: &ApiVersion,
    path: &str,
) -> Result<(), Box<Response>> {
    if query.api_version.as_deref().is_none_or(str::is_empty) {
        let e = DpsError::bad_request("api-version is required");
        return Err(Box::new(error_response(&e)));
    }
    let unauthorized = |why: &str| {
        let e = DpsError::new(401, error::SERVICE_UNAUTHORIZED, why);
        Box::new(error_response(&e))
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(sas::parse)
        .ok_or_else(|| unauthorized("Authorization is not a SharedAccessSignature"))?;
    if token.policy.as_deref() != Some(SERVICE_POLICY) {
        return Err(unauthorized(
            "unknown or missing shared access policy (skn)",
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let resource = format!("{}/{path}", state.config.host_name);
    sas::verify(&token, &state.policy_key, &resource, now)
        .map_err(|r| unauthorized(&r.to_string()))?;
    if let Err(wait) = state.throttles.operation() {
        let mut r = error_response(&DpsError::throttled());
        if let Ok(v) = HeaderValue::from_str(&retry_after_secs(wait).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(Box::new(r));
    }
    Ok(())
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().trim_matches('"').to_string())
}

/// Creates or replaces an enrolment; `if_match` (an etag or `*`) makes it an update of the
/// current version. Returns what GET will return.
pub(super) fn store<E: Enrollment>(
    state: &DpsState,
    mut e: E,
    if_match: Option<&str>,
) -> Result<E, DpsError> {
    let id = e.id().to_string();
    if !enrollment::valid_id(&id) {
        return Err(DpsError::bad_request(format!("'{id}' is not a valid id")));
    }
    check_allocation(state, e.settings())?;
    let certs = enrollment::trusted_certificates(e.settings(), E::INDIVIDUAL, |name| {
        read(&state.certificates).get(name).cloned()
    })?;
    let verifier = match E::INDIVIDUAL {
        true => None,
        false => Some(enrollment::chain_verifier(&certs)?),
    };
    let mut all = write(&state.enrollments);
    let existing = E::map(&mut all)
        .get_mut(&id)
        .map(|s| s.reply.settings().clone());
    match (&existing, if_match) {
        (None, Some(_)) => return Err(DpsError::not_found(format!("{} not found.", E::WHAT))),
        (Some(old), Some(tag)) if tag != "*" && old.etag.as_deref() != Some(tag) => {
            let msg = "The etag does not match the enrollment's.";
            return Err(DpsError::new(412, error::PRECONDITION_FAILED, msg));
        }
        _ => {}
    }
    let now = now_utc();
    let s = e.settings();
    s.created_date_time_utc = Some(
        existing
            .and_then(|old| old.created_date_time_utc)
            .unwrap_or_else(|| now.clone()),
    );
    s.last_updated_date_time_utc = Some(now);
    s.etag = Some(new_etag());
    let stored = Stored {
        reply: e.clone(),
        certs,
        verifier,
    };
    E::map(&mut all).insert(id, stored);
    Ok(e)
}

/// The allocation settings DPS would accept, against the hubs linked to this service.
fn check_allocation(state: &DpsState, s: &Settings) -> Result<(), DpsError> {
    let hubs = s.hub_names();
    match s.allocation_policy {
        Some(AllocationPolicy::GeoLatency | AllocationPolicy::Custom) => {
            return Err(DpsError::bad_request(
                "allocationPolicy geoLatency and custom are not emulated; use hashed or static",
            ));
        }
        Some(AllocationPolicy::Static) if hubs.len() > 1 => {
            return Err(DpsError::bad_request(
                "static allocation takes exactly one IoT hub",
            ));
        }
        _ => {}
    }
    let linked = read(&state.hubs);
    if let Some(h) = hubs
        .iter()
        .find(|h| !linked.iter().any(|l| l.host_name().eq_ignore_ascii_case(h)))
    {
        return Err(DpsError::bad_request(format!(
            "IoT hub '{h}' is not linked to this provisioning service"
        )));
    }
    Ok(())
}

/// An opaque etag, compared without the quotes If-Match puts around it.
fn new_etag() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

fn path_of<E: Enrollment>(id: &str) -> String {
    match E::INDIVIDUAL {
        true => format!("individualEnrollments/{id}"),
        false => format!("enrollmentGroups/{id}"),
    }
}

async fn put_enrollment<E: Enrollment>(
    State(state): State<Arc<DpsState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &path_of::<E>(&id)) {
        return *r;
    }
    let e: E = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(err) => return error_response(&DpsError::bad_request(format!("enrollment: {err}"))),
    };
    if e.id() != id {
        let msg = "The id in the body differs from the URL's.";
        return error_response(&DpsError::bad_request(msg));
    }
    match store(&state, e, if_match(&headers).as_deref()) {
        Ok(stored) => json_response(&stored),
        Err(err) => error_response(&err),
    }
}

async fn get_enrollment<E: Enrollment>(
    State(state): State<Arc<DpsState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &path_of::<E>(&id)) {
        return *r;
    }
    let found = E::map(&mut write(&state.enrollments))
        .get(&id)
        .map(|s| s.reply.clone());
    match found {
        Some(e) => json_response(&e),
        None => error_response(&DpsError::not_found(format!("{} not found.", E::WHAT))),
    }
}

async fn delete_enrollment<E: Enrollment>(
    State(state): State<Arc<DpsState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &path_of::<E>(&id)) {
        return *r;
    }
    let mut all = write(&state.enrollments);
    let map = E::map(&mut all);
    let Some(current) = map.get_mut(&id) else {
        return error_response(&DpsError::not_found(format!("{} not found.", E::WHAT)));
    };
    if let Some(tag) = if_match(&headers)
        && tag != "*"
        && current.reply.settings().etag.as_deref() != Some(tag.as_str())
    {
        let msg = "The etag does not match the enrollment's.";
        return error_response(&DpsError::new(412, error::PRECONDITION_FAILED, msg));
    }
    map.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_registration(
    State(state): State<Arc<DpsState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &format!("registrations/{id}")) {
        return *r;
    }
    match lock(&state.registrations).record(&id) {
        Some(r) => json_response(&r.service_view()),
        None => error_response(&DpsError::not_found("Registration not found.")),
    }
}

async fn delete_registration(
    State(state): State<Arc<DpsState>>,
    Path(id): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers, &query, &format!("registrations/{id}")) {
        return *r;
    }
    match lock(&state.registrations).remove(&id) {
        true => StatusCode::NO_CONTENT.into_response(),
        false => error_response(&DpsError::not_found("Registration not found.")),
    }
}
