//! HTTP routes of the CA emulator. ASP.NET matches routes case-insensitively, so one dispatcher
//! matches on the lower-cased path instead of axum's case-sensitive router.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::authority::{SignRequest, subject_cn};
use super::{CaState, Caller, Domain, IssuedRecord};
use crate::ezca::models::{ApiResult, AvailableCa, CertificateCreateRequest, NewDomainRequest};

pub(super) fn router(state: Arc<CaState>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    State(state): State<Arc<CaState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_ascii_lowercase();
    if method == Method::GET && path.starts_with("/certs/") {
        return ca_certificate(&state, &path);
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Certificate-JWT endpoints authenticate with the certificate, not Azure AD.
    if method == Method::POST
        && path.trim_end_matches('/') == "/api/certificates/renewcertificatev2"
    {
        return super::renew::renew_v2(&state, auth, &body);
    }
    let caller = match state.tokens.verify(auth) {
        Ok(c) => c,
        Err(why) => return (StatusCode::UNAUTHORIZED, format!("Error: {why}")).into_response(),
    };
    match (method, path.trim_end_matches('/')) {
        (Method::GET, "/api/ca/getavailablesslcas") => {
            axum::Json(vec![available_ca(&state)]).into_response()
        }
        (Method::POST, "/api/ca/registernewdomain") => match serde_json::from_slice(&body) {
            Ok(req) => api_result(register_domain(&state, &caller, req)),
            Err(e) => bad_json(e),
        },
        (Method::POST, "/api/ca/requestsslcertificate") => match serde_json::from_slice(&body) {
            Ok(req) => api_result(request_certificate(&state, &caller, req)),
            Err(e) => bad_json(e),
        },
        _ => (StatusCode::NOT_FOUND, "Error: no such endpoint").into_response(),
    }
}

fn bad_json(e: serde_json::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!("Error: request body is not valid JSON: {e}"),
    )
        .into_response()
}

/// Business outcomes travel as HTTP 200 with `Success` true or false, as EZCA does.
fn api_result(outcome: Result<String, String>) -> Response {
    let (success, message) = match outcome {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    };
    axum::Json(ApiResult { success, message }).into_response()
}

fn available_ca(state: &CaState) -> AvailableCa {
    let a = &state.authority;
    AvailableCa {
        ca_id: Some(a.ca_id.clone()),
        friendly_name: Some(a.friendly_name.clone()),
        template_type: Some("SSL Template".into()),
        template_id: Some(a.template_id.clone()),
        key_usage: Some("Digital Signature, Key Encipherment".into()),
        max_cert_life_days: i64::from(a.max_cert_life_days),
        domain_restrictions: Some("All domains allowed".into()),
        key_type: Some("EC P256".into()),
        hashing: Some("SHA256".into()),
    }
}

fn check_ca(
    state: &CaState,
    ca_id: &Option<String>,
    template_id: &Option<String>,
) -> Result<(), String> {
    let a = &state.authority;
    let same = |got: &Option<String>, want: &str| {
        got.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(want))
    };
    if !same(ca_id, &a.ca_id) || !same(template_id, &a.template_id) {
        return Err("CA or template not found".into());
    }
    Ok(())
}

fn register_domain(
    state: &CaState,
    caller: &Caller,
    req: NewDomainRequest,
) -> Result<String, String> {
    check_ca(state, &req.ca_id, &req.template_id)?;
    let domain = req
        .domain
        .as_deref()
        .map(str::trim)
        .unwrap_or("")
        .to_ascii_lowercase();
    if domain.is_empty() {
        return Err("Domain is required".into());
    }
    let mut domains = state.domains.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = domains.get(&domain) {
        return match existing.owners.contains(&caller.oid) {
            true => Ok("Domain already registered".into()),
            false => Err("Domain is already registered by another owner".into()),
        };
    }
    let mut owners: Vec<String> = req.owners.iter().map(|o| o.object_id.clone()).collect();
    if !owners.contains(&caller.oid) {
        owners.push(caller.oid.clone());
    }
    let requesters = req.requesters.iter().map(|o| o.object_id.clone()).collect();
    domains.insert(domain, Domain { owners, requesters });
    Ok("Domain registered successfully".into())
}

fn may_request(state: &CaState, caller: &Caller, name: &str) -> bool {
    let domains = state.domains.lock().unwrap_or_else(|p| p.into_inner());
    domains
        .get(&name.to_ascii_lowercase())
        .is_some_and(|d| d.owners.contains(&caller.oid) || d.requesters.contains(&caller.oid))
}

fn request_certificate(
    state: &CaState,
    caller: &Caller,
    req: CertificateCreateRequest,
) -> Result<String, String> {
    check_ca(state, &req.ca_id, &req.template_id)?;
    let cn = subject_cn(&req.subject_name).ok_or("SubjectName must contain CN=")?;
    for name in std::iter::once(cn).chain(req.subject_alt_names.iter().map(String::as_str)) {
        if !may_request(state, caller, name) {
            return Err(format!(
                "You are not an owner or requester of domain {name}"
            ));
        }
    }
    let sign = SignRequest {
        subject_name: &req.subject_name,
        dns_sans: &req.subject_alt_names,
        csr_pem: &req.csr,
        validity_days: req.validity_in_days,
        ekus: &req.ekus,
        key_usages: &req.key_usages,
    };
    let der = state.authority.sign(&sign).map_err(|r| r.0)?;
    let record = IssuedRecord {
        der: der.clone(),
        subject_cn: cn.to_string(),
        requested_by: caller.oid.clone(),
        revoked: false,
    };
    state
        .issued
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(crate::crypto::sha1_thumbprint(&der), record);
    Ok(crate::crypto::cert_to_pem(&der))
}

fn ca_certificate(state: &CaState, path: &str) -> Response {
    let a = &state.authority;
    if path == format!("/certs/{}.cer", a.ca_id.to_ascii_lowercase()) {
        return (
            [(header::CONTENT_TYPE, "application/pkix-cert")],
            a.issuing_der.to_vec(),
        )
            .into_response();
    }
    (StatusCode::NOT_FOUND, "Error: no such certificate").into_response()
}
