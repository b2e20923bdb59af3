//! HTTP routes of the CA emulator. ASP.NET matches routes case-insensitively, so one dispatcher
//! matches on the lower-cased path instead of axum's case-sensitive router.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::capacity::Verdict;
use super::certificates;
use super::state::CaState;
use crate::emulator::persist::Domain;
use crate::emulator::token::Caller;
use crate::ezca::models::{ApiResult, AvailableCa, NewDomainRequest};
use crate::sync::lock;

pub(super) fn router(state: Arc<CaState>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

/// The largest body a CA request needs: a CSR (an RSA-4096 one is ~2.5 KB of PEM), a subject of
/// at most 1 KB and at most 100 SANs.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// How the CA's HTTP server is bounded: every request but the public CA certificates and CRLs
/// is authenticated from its headers before its body is read (an Azure AD token, or on the
/// certificate endpoints a certificate-JWT whose `jti` is only spent once the body is read);
/// bodies up to [`MAX_BODY`] on POST, 1 KiB otherwise.
pub(super) fn http_options(
    state: Arc<CaState>,
    limits: crate::emulator::http::HttpLimits,
) -> crate::emulator::http::HttpOptions {
    let gate = move |parts: &axum::http::request::Parts| {
        if state.unavailable.is_open() {
            // A scenario's ca_unavailable fault, before anything else (as a front door would).
            let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
            return Err(Box::new(unavailable.into_response()));
        }
        let path = parts.uri.path().to_ascii_lowercase();
        if parts.method == Method::GET && (path.starts_with("/certs/") || path.starts_with("/crl/"))
        {
            return Ok(());
        }
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let checked = match path.starts_with("/api/certificates/") {
            true => super::renew::verified_token(&state, auth).map(|_| ()),
            false => state.tokens.verify(auth).map(|_| ()),
        };
        checked.map_err(|why| {
            Box::new((StatusCode::UNAUTHORIZED, format!("Error: {why}")).into_response())
        })
    };
    crate::emulator::http::HttpOptions::default()
        .with_limits(limits)
        .with_gate(Arc::new(gate))
        .with_body_limits(Arc::new(|method, _| match *method {
            Method::POST => MAX_BODY,
            _ => 1024,
        }))
}

async fn dispatch(
    State(state): State<Arc<CaState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_ascii_lowercase();
    if method == Method::GET && (path.starts_with("/certs/") || path.starts_with("/crl/")) {
        return ca_certificate(&state, &path);
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Certificate-JWT endpoints authenticate with the certificate, not Azure AD.
    let route = path.trim_end_matches('/');
    if route.starts_with("/api/certificates/renew") {
        // Renewals are issuances: they go through the capacity model.
        return limited(&state, || {
            super::renew::dispatch(&state, &method, route, auth, &body).unwrap_or_else(|| {
                (StatusCode::NOT_FOUND, "Error: no such endpoint").into_response()
            })
        })
        .await;
    }
    if let Some(response) = super::renew::dispatch(&state, &method, route, auth, &body) {
        return response;
    }
    let caller = match state.tokens.verify(auth) {
        Ok(c) => c,
        Err(why) => return (StatusCode::UNAUTHORIZED, format!("Error: {why}")).into_response(),
    };
    management(&state, &caller, &method, route, &body).await
}

/// The management endpoints, for a caller Azure AD authenticated.
async fn management(
    state: &CaState,
    caller: &Caller,
    method: &Method,
    route: &str,
    body: &[u8],
) -> Response {
    match (method.clone(), route) {
        (Method::GET, "/api/ca/getavailablesslcas") => {
            let cas: Vec<AvailableCa> = state
                .authorities
                .iter()
                .map(|a| available_ca(state, a))
                .collect();
            axum::Json(cas).into_response()
        }
        (Method::POST, "/api/ca/registernewdomain") => match serde_json::from_slice(body) {
            Ok(req) => api_result(register_domain(state, caller, req)),
            Err(e) => bad_json(e),
        },
        (Method::POST, "/api/ca/requestsslcertificate")
        | (Method::POST, "/api/ca/requestfullsslcertificate")
        | (Method::POST, "/api/ca/requestsslcertificatev2") => {
            issuance(state, caller, route, body).await
        }
        (Method::GET, "/api/ca/getmydomains") => {
            api_result(certificates::my_domains(state, caller))
        }
        (Method::POST, "/api/ca/revokecertificatev2") => match serde_json::from_slice(body) {
            Ok(req) => api_result(certificates::revoke_v2(state, caller, &req)),
            Err(e) => bad_json(e),
        },
        _ => (StatusCode::NOT_FOUND, "Error: no such endpoint").into_response(),
    }
}

/// The three issuance endpoints, through the capacity model: V1 answers the PEM wrapped in an
/// APIResult, the "full" V1 and V2 answer the created certificate bare.
async fn issuance(state: &CaState, caller: &Caller, route: &str, body: &[u8]) -> Response {
    match route {
        "/api/ca/requestsslcertificate" => match serde_json::from_slice(body) {
            Ok(req) => {
                let issue = || certificates::request_v1(state, caller, &req);
                limited(state, || {
                    api_result(issue().map(|c| crate::crypto::cert_to_pem(&c)))
                })
                .await
            }
            Err(e) => bad_json(e),
        },
        "/api/ca/requestfullsslcertificate" => match serde_json::from_slice(body) {
            Ok(req) => {
                let issue = || certificates::request_v1(state, caller, &req);
                limited(state, || {
                    bare(issue().map(|c| certificates::created(state, &c)))
                })
                .await
            }
            Err(e) => bad_json(e),
        },
        _ => match serde_json::from_slice(body) {
            Ok(req) => {
                let issue = || certificates::request_v2(state, caller, &req);
                limited(state, || {
                    bare(issue().map(|c| certificates::created(state, &c)))
                })
                .await
            }
            Err(e) => bad_json(e),
        },
    }
}

/// Runs an issuance under the capacity model: 429 with `Retry-After` when the CA is saturated,
/// 503 for an injected failure.
async fn limited<T: IntoResponse>(state: &CaState, issue: impl FnOnce() -> T) -> Response {
    match state.capacity.serve(issue).await {
        Ok(r) => r.into_response(),
        Err(Verdict::Throttled(wait)) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                "Error: Too many requests",
            )
                .into_response()
        }
        Err(Verdict::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Error: Service unavailable",
        )
            .into_response(),
    }
}

/// Endpoints that answer a bare object say no with 400 and a plain-text `Error: ...` body.
fn bare<T: serde::Serialize>(outcome: Result<T, String>) -> Response {
    match outcome {
        Ok(body) => axum::Json(body).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, format!("Error: {why}")).into_response(),
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

fn available_ca(state: &CaState, a: &super::authority::Authority) -> AvailableCa {
    AvailableCa {
        ca_id: Some(a.ca_id.clone()),
        friendly_name: Some(a.friendly_name.clone()),
        template_type: Some("SSL Template".into()),
        template_id: Some(a.template_id.clone()),
        key_usage: Some("Digital Signature, Key Encipherment".into()),
        max_cert_life_days: i64::from(a.max_cert_life_days),
        domain_restrictions: Some(match state.allowed_domains.is_empty() {
            true => "All domains allowed".into(),
            false => format!("Restricted to: {}", state.allowed_domains.join(", ")),
        }),
        key_type: Some(a.key.ca_key_type().into()),
        hashing: Some("SHA256".into()),
    }
}

fn register_domain(
    state: &CaState,
    caller: &Caller,
    req: NewDomainRequest,
) -> Result<String, String> {
    let (ca, _) = state.authority(req.ca_id.as_deref(), req.template_id.as_deref())?;
    let domain = req
        .domain
        .as_deref()
        .map(str::trim)
        .unwrap_or("")
        .to_ascii_lowercase();
    if domain.is_empty() {
        return Err("Domain is required".into());
    }
    let allowed = state.allowed_domains.is_empty()
        || state
            .allowed_domains
            .iter()
            .any(|a| domain == *a || domain.ends_with(&format!(".{a}")));
    if !allowed {
        return Err(format!(
            "Domain {domain} is not allowed by this CA's domain restrictions"
        ));
    }
    let mut domains = lock(&state.domains);
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
    let id = uuid::Uuid::new_v4().to_string();
    let entry = Domain {
        id,
        ca,
        owners,
        requesters,
    };
    state.journal(crate::emulator::persist::JournalEvent::Domain {
        name: domain.clone(),
        domain: entry.clone(),
    });
    domains.insert(domain, entry);
    Ok("Domain registered successfully".into())
}

fn ca_certificate(state: &CaState, path: &str) -> Response {
    for (index, a) in state.authorities.iter().enumerate() {
        let id = a.ca_id.to_ascii_lowercase();
        if path == format!("/crl/{id}.crl") {
            let revoked = super::state::crl_entries(state, index);
            return match a.crl(&revoked, super::state::next_crl_number(state)) {
                Ok(der) => ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response(),
                Err(e) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("Error: {e}")).into_response()
                }
            };
        }
        if path == format!("/certs/{id}.cer") {
            return (
                [(header::CONTENT_TYPE, "application/pkix-cert")],
                a.issuing_der.to_vec(),
            )
                .into_response();
        }
    }
    (StatusCode::NOT_FOUND, "Error: no such certificate").into_response()
}
