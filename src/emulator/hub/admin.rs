//! Trust for the hub emulator: CA certificates are uploaded the way the management API takes them
//! (`PUT /certificates/{name}` with `{"properties":{"certificate": PEM, "isVerified": true}}`),
//! which is also what EZCA's one-click trust does for a real hub. Only verified certificates are
//! trusted for device authentication.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::trust;
use super::rest::{ApiVersion, argument_invalid, authorize};
use super::state::HubState;

#[derive(Deserialize)]
struct Upload {
    properties: UploadProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadProperties {
    certificate: String,
    #[serde(default)]
    is_verified: bool,
}

pub(super) async fn upload_ca(
    State(state): State<Arc<HubState>>,
    Path(name): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers, &query, "certificates") {
        return *r;
    }
    let upload: Upload = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return argument_invalid(&format!("certificate body: {e}"));
        }
    };
    let certs = match crate::crypto::certs_from_pem(&upload.properties.certificate) {
        Ok(c) => c,
        Err(e) => {
            return argument_invalid(&format!("certificate: {e}"));
        }
    };
    let Some(info) = certs
        .first()
        .and_then(|c| crate::crypto::CertInfo::parse(c).ok())
    else {
        return argument_invalid("certificate does not parse");
    };
    if upload.properties.is_verified {
        for c in certs.iter().cloned() {
            trust(&state, c);
        }
    }
    Json(serde_json::json!({
        "name": name,
        "properties": {
            "subject": info.subject_cn,
            "thumbprint": crate::crypto::sha1_thumbprint(&certs[0]),
            "isVerified": upload.properties.is_verified,
            "expiry": info.not_after.unix_timestamp(),
        }
    }))
    .into_response()
}
