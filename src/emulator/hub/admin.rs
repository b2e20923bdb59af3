//! The hub's management side, shaped like Azure Resource Manager's `Microsoft.Devices/IotHubs`
//! resource (served on the registry endpoint): `GET` the hub (its SKU and units), and CA
//! certificates with IoT Hub's proof of possession:
//!
//! 1. `PUT …/certificates/{name}` `{"properties":{"certificate": PEM}}`: uploaded, unverified;
//! 2. `POST …/certificates/{name}/generateVerificationCode` (`If-Match` the etag): a code;
//! 3. `POST …/certificates/{name}/verify` `{"certificate": PEM}`: a certificate whose subject CN
//!    is the code, signed by the uploaded CA, proves its key is held; the CA is then verified.
//!
//! Only verified CAs are trusted for CA-signed device authentication, as IoT Hub enforces. An
//! upload asking for `isVerified: true` is stored unverified: here the proof is required. The
//! embedded assembly trusts the CA it runs itself directly ([`super::HubEmulator::trust_ca`]).
//! `PUT /certificates/{name}` (without the resource prefix) is the same upload.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;

use super::auth::{trust, verifier_for};
use super::rest::{ApiVersion, authorize};
use super::state::{CaRecord, HubState};
use crate::sync::write;

/// The ARM resource path of a hub (any subscription, group and name).
pub(super) const RESOURCE_PATH: &str = "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Devices/IotHubs/{hub}";

pub(super) fn routes() -> axum::Router<Arc<HubState>> {
    let cert = format!("{RESOURCE_PATH}/certificates/{{name}}");
    axum::Router::new()
        .route(RESOURCE_PATH, get(hub_resource))
        .route("/certificates/{name}", put(upload_ca).get(get_ca))
        .route(&cert, put(upload_ca).get(get_ca))
        .route(
            &format!("{cert}/generateVerificationCode"),
            post(verification_code),
        )
        .route(&format!("{cert}/verify"), post(verify))
}

type Params = Path<HashMap<String, String>>;

/// An ARM-style error (`{"error":{"code","message"}}`).
fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "InvalidCertificate", message)
}

async fn hub_resource(
    State(state): State<Arc<HubState>>,
    Path(params): Params,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "") {
        return *r;
    }
    // Without a tier the emulator is unthrottled, which no Azure SKU is: it says so by name.
    let (sku, tier, capacity) = match state.throttles.limits.tier {
        Some((sku, units)) => (sku.name().to_string(), tier_word(sku.name()), units),
        None => ("fleetsim-unlimited".to_string(), "Emulator", 1),
    };
    let name = params.get("hub").cloned().unwrap_or_default();
    Json(serde_json::json!({
        "name": name,
        "type": "Microsoft.Devices/IotHubs",
        "sku": {"name": sku, "tier": tier, "capacity": capacity},
        "properties": {"hostName": state.host_name},
    }))
    .into_response()
}

fn tier_word(sku: &str) -> &'static str {
    match sku.as_bytes().first() {
        Some(b'F') => "Free",
        Some(b'B') => "Basic",
        _ => "Standard",
    }
}

#[derive(Deserialize)]
struct Upload {
    properties: UploadProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadProperties {
    certificate: String,
}

fn name_of(params: &HashMap<String, String>) -> String {
    params.get("name").cloned().unwrap_or_default()
}

/// `CertificateDescription`, as ARM answers it.
fn description(name: &str, record: &CaRecord, code: Option<&str>) -> Response {
    let info = crate::crypto::CertInfo::parse(&record.der).ok();
    let mut properties = serde_json::json!({
        "subject": info.as_ref().and_then(|i| i.subject_cn.clone()),
        "expiry": info.as_ref().map(|i| i.not_after.unix_timestamp()),
        "thumbprint": crate::crypto::sha1_thumbprint(&record.der),
        "isVerified": record.verified,
        "certificate": crate::crypto::cert_to_pem(&record.der),
    });
    if let Some(code) = code {
        properties["verificationCode"] = code.into();
    }
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("\"{}\"", record.etag).parse() {
        headers.insert("etag", v);
    }
    let body = serde_json::json!({
        "name": name,
        "type": "Microsoft.Devices/IotHubs/Certificates",
        "etag": record.etag,
        "properties": properties,
    });
    (headers, Json(body)).into_response()
}

fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn upload_ca(
    State(state): State<Arc<HubState>>,
    Path(params): Params,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "certificates") {
        return *r;
    }
    let upload: Upload = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => return bad_request(&format!("certificate body: {e}")),
    };
    let der = match crate::crypto::certs_from_pem(&upload.properties.certificate) {
        Ok(mut certs) => certs.swap_remove(0),
        Err(e) => return bad_request(&format!("certificate: {e}")),
    };
    if crate::crypto::CertInfo::parse(&der).is_err() {
        return bad_request("certificate does not parse");
    }
    let name = name_of(&params);
    let record = CaRecord {
        der,
        verified: false,
        code: None,
        etag: new_etag(),
    };
    let mut trust = write(&state.trust);
    // A replaced certificate is no longer trusted: its successor must prove itself.
    if let Some(old) = trust.certificates.insert(name.clone(), record.clone())
        && old.verified
        && old.der != record.der
    {
        trust.roots.retain(|r| *r != old.der);
        trust.verifier = verifier_for(&trust.roots);
    }
    drop(trust);
    description(&name, &record, None)
}

async fn get_ca(
    State(state): State<Arc<HubState>>,
    Path(params): Params,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "certificates") {
        return *r;
    }
    let name = name_of(&params);
    let record = state.trust_record(&name);
    match record {
        Some(r) => description(&name, &r, None),
        None => not_found(&name),
    }
}

fn not_found(name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "CertificateNotFound",
        &format!("no certificate named {name:?}"),
    )
}

/// The `If-Match` header names the record's etag (or `*`), as ARM requires for these calls.
fn etag_matches(headers: &HeaderMap, record: &CaRecord) -> bool {
    headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"'))
        .is_some_and(|v| v == "*" || v == record.etag)
}

async fn verification_code(
    State(state): State<Arc<HubState>>,
    Path(params): Params,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "certificates") {
        return *r;
    }
    let name = name_of(&params);
    let mut trust = write(&state.trust);
    let Some(record) = trust.certificates.get_mut(&name) else {
        return not_found(&name);
    };
    if !etag_matches(&headers, record) {
        return precondition_failed();
    }
    let code = crate::crypto::hex_upper(&rand::random::<[u8; 24]>());
    record.code = Some(code.clone());
    record.etag = new_etag();
    let record = record.clone();
    drop(trust);
    description(&name, &record, Some(&code))
}

fn precondition_failed() -> Response {
    arm_error(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
        "If-Match must name the certificate's current etag",
    )
}

#[derive(Deserialize)]
struct Verification {
    certificate: String,
}

async fn verify(
    State(state): State<Arc<HubState>>,
    Path(params): Params,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "certificates") {
        return *r;
    }
    let name = name_of(&params);
    let proof: Verification = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("verification body: {e}")),
    };
    let Some(record) = state.trust_record(&name) else {
        return not_found(&name);
    };
    if !etag_matches(&headers, &record) {
        return precondition_failed();
    }
    if let Err(why) = check_proof(&record, &proof.certificate) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "CertificateVerificationFailed",
            &why,
        );
    }
    let verified = {
        let mut trust = write(&state.trust);
        let Some(r) = trust.certificates.get_mut(&name) else {
            return not_found(&name);
        };
        r.verified = true;
        r.code = None;
        r.etag = new_etag();
        r.clone()
    };
    trust(&state, verified.der.clone());
    description(&name, &verified, None)
}

/// The proof of possession: a certificate for the current verification code, signed by the
/// uploaded CA's key and valid now.
fn check_proof(record: &CaRecord, pem: &str) -> Result<(), String> {
    let code = record
        .code
        .as_deref()
        .ok_or("no verification code was generated for this certificate")?;
    let leaf = crate::crypto::certs_from_pem(pem)
        .map_err(|e| format!("verification certificate: {e}"))?
        .swap_remove(0);
    let info = crate::crypto::CertInfo::parse(&leaf)
        .map_err(|e| format!("verification certificate: {e}"))?;
    if info.subject_cn.as_deref() != Some(code) {
        return Err(format!(
            "the verification certificate's subject CN is {:?}, not the verification code",
            info.subject_cn.unwrap_or_default()
        ));
    }
    let verifier = verifier_for(std::slice::from_ref(&record.der))
        .ok_or("the uploaded certificate cannot anchor a chain")?;
    verifier
        .verify_client_cert(&CertificateDer::from(leaf.to_vec()), &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| {
            format!("the verification certificate is not signed by this CA (or not valid now): {e}")
        })
}
