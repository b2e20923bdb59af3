//! Endpoints authenticated by the certificate itself (reference §5.5, §5.6, §6): an RS256
//! certificate-JWT signed with the certificate's key is the bearer.
//!
//! - `POST api/Certificates/RenewCertificateV2`: body `{"Certificate": PEM, "Payload": {"CSR",
//!   "ValidityInDays"}}`; answers the new certificate's PEM as the whole body.
//! - `POST api/Certificates/RenewCertificateV3`: same body; answers `CertificateCreatedResponse`,
//!   double-encoded as a JSON string, as ezca-go says some EZCA endpoints do.
//! - `POST api/Certificates/RenewCertificate` (legacy): body `{"CSR", "ValidityInDays"}`, the
//!   certificate found by the token's `x5t`; answers `APIResultModel`.
//! - `GET api/Certificates/RevokeCertificate`: revokes the certificate named by `x5t`.
//!
//! Authentication failures are 401 with a plain-text `Error: ...` body; broken rules are 400 with
//! one (or `Success:false` on the APIResult endpoints).

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls_pki_types::CertificateDer;

use super::authority::SignRequest;
use super::state::CaState;
use crate::crypto::{CertInfo, jwt, sha1_thumbprint};
use crate::emulator::persist::IssuedRecord;
use crate::ezca::models::{ApiResult, CertRenewRequest, CertificateAuthenticationPayload};
use crate::sync::lock;

/// Clock skew allowed on `nbf`/`exp`.
const SKEW_SECS: u64 = 300;

/// A refusal: the status and the `Error: ...` text body EZCA answers with.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, format!("Error: {}", self.1)).into_response()
    }
}

fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Refused {
    Refused(status, why.to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Authenticates the certificate-JWT against the certificate it names; returns that
/// certificate's issuance record.
fn authenticate(
    state: &CaState,
    authorization: Option<&str>,
    certificate_pem: Option<&str>,
) -> Result<(CertificateDer<'static>, IssuedRecord), Refused> {
    let unauthorized = |why: &str| refuse(StatusCode::UNAUTHORIZED, why);
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    let parsed = jwt::parse(token).ok_or_else(|| unauthorized("bearer token is not a JWT"))?;
    if parsed.header.alg != "RS256" {
        return Err(unauthorized("only RS256 certificate tokens are accepted"));
    }
    let x5t = parsed
        .header
        .x5t
        .clone()
        .ok_or_else(|| unauthorized("token has no x5t"))?
        .to_ascii_uppercase();
    let lookup = |thumbprint: &str| lock(&state.issued).get(thumbprint).cloned();
    let (cert, record) = match certificate_pem {
        // V2/V3: the certificate travels in the body and must be the one x5t names.
        Some(pem) => {
            let cert = crate::crypto::certs_from_pem(pem)
                .ok()
                .and_then(|mut c| (!c.is_empty()).then(|| c.swap_remove(0)))
                .ok_or_else(|| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        "Certificate is not a PEM certificate",
                    )
                })?;
            if sha1_thumbprint(&cert) != x5t {
                return Err(unauthorized("x5t does not name the certificate"));
            }
            let record = lookup(&x5t)
                .ok_or_else(|| unauthorized("certificate was not issued by this CA"))?;
            (cert, record)
        }
        // Legacy endpoints: x5t alone names the certificate.
        None => {
            let record =
                lookup(&x5t).ok_or_else(|| unauthorized("x5t names no certificate of this CA"))?;
            (record.der.clone(), record)
        }
    };
    if !jwt::verify_signature(&parsed, &cert) {
        return Err(unauthorized(
            "token signature does not verify with the certificate's key",
        ));
    }
    let c = &parsed.claims;
    if !c
        .aud
        .as_deref()
        .is_some_and(|a| a == jwt::AUDIENCE || a == jwt::AGENT_AUDIENCE)
    {
        return Err(unauthorized("token audience is not EZCA"));
    }
    let t = now();
    if c.nbf.is_some_and(|nbf| nbf > t + SKEW_SECS) {
        return Err(unauthorized("token not yet valid"));
    }
    if c.exp.is_none_or(|exp| exp + SKEW_SECS <= t) {
        return Err(unauthorized("token expired"));
    }
    let jti = c
        .jti
        .clone()
        .ok_or_else(|| unauthorized("token has no jti"))?;
    let mut seen = lock(&state.seen_jti);
    if seen.len() > 100_000 {
        seen.retain(|_, exp| *exp + SKEW_SECS > t);
    }
    if seen.insert(jti, c.exp.unwrap_or(t)).is_some() {
        return Err(unauthorized("token was already used (jti replay)"));
    }
    Ok((cert, record))
}

/// Where the authenticated endpoints are; `None` for any other path.
pub(super) fn dispatch(
    state: &CaState,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Option<Response> {
    let response = match (method, path) {
        (&Method::POST, "/api/certificates/renewcertificatev2") => {
            renew_with_body(state, authorization, body, false)
        }
        (&Method::POST, "/api/certificates/renewcertificatev3") => {
            renew_with_body(state, authorization, body, true)
        }
        (&Method::POST, "/api/certificates/renewcertificate") => {
            renew_legacy(state, authorization, body)
        }
        (&Method::GET, "/api/certificates/revokecertificate") => revoke(state, authorization),
        _ => return None,
    };
    Some(response)
}

fn bad_json(e: serde_json::Error) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        format!("request body is not valid JSON: {e}"),
    )
    .into_response()
}

fn renew_with_body(
    state: &CaState,
    authorization: Option<&str>,
    body: &[u8],
    v3: bool,
) -> Response {
    let request: CertificateAuthenticationPayload<CertRenewRequest> =
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return bad_json(e),
        };
    let renewed = authenticate(state, authorization, Some(&request.certificate))
        .and_then(|(cert, record)| renew(state, &cert, &record, &request.payload));
    match (renewed, v3) {
        (Err(refused), _) => refused.into_response(),
        (Ok(der), false) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            crate::crypto::cert_to_pem(&der),
        )
            .into_response(),
        (Ok(der), true) => {
            let created = super::certificates::created(state, &der);
            let inner = serde_json::to_string(&created).unwrap_or_default();
            let double = serde_json::to_string(&inner).unwrap_or_default();
            (
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                double,
            )
                .into_response()
        }
    }
}

fn renew_legacy(state: &CaState, authorization: Option<&str>, body: &[u8]) -> Response {
    let request: CertRenewRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad_json(e),
    };
    let (cert, record) = match authenticate(state, authorization, None) {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    let result = match renew(state, &cert, &record, &request) {
        Ok(der) => ApiResult {
            success: true,
            message: crate::crypto::cert_to_pem(&der),
        },
        Err(Refused(_, why)) => ApiResult {
            success: false,
            message: why,
        },
    };
    axum::Json(result).into_response()
}

fn revoke(state: &CaState, authorization: Option<&str>) -> Response {
    match authenticate(state, authorization, None) {
        Ok((cert, _)) => {
            super::state::revoke(state, &sha1_thumbprint(&cert));
            axum::Json(ApiResult {
                success: true,
                message: "Successful".into(),
            })
            .into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

/// The renewal rules, then a new certificate with the same identity.
fn renew(
    state: &CaState,
    cert: &CertificateDer<'static>,
    record: &IssuedRecord,
    request: &CertRenewRequest,
) -> Result<CertificateDer<'static>, Refused> {
    let bad = |why: &str| refuse(StatusCode::BAD_REQUEST, why);
    if record.revoked {
        return Err(bad("certificate is revoked"));
    }
    let current = CertInfo::parse(cert).map_err(|_| bad("certificate does not parse"))?;
    if current.not_after < time::OffsetDateTime::now_utc() {
        return Err(bad("certificate is expired"));
    }
    // The renewal keeps the identity: the CSR must name the same subject and SANs.
    let csr_der = super::authority::decode_csr_pem(&request.csr)
        .map_err(|_| bad("CSR is not a PEM certificate request"))?;
    let (csr_cn, csr_sans) = csr_names(&csr_der).ok_or_else(|| bad("invalid CSR"))?;
    if csr_cn != current.subject_cn || (!csr_sans.is_empty() && csr_sans != current.dns_sans) {
        return Err(bad("CSR does not match certificate"));
    }
    let subject = format!("CN={}", current.subject_cn.clone().unwrap_or_default());
    let sign = SignRequest {
        subject_name: &subject,
        dns_sans: &current.dns_sans,
        other_sans: &[],
        csr_pem: &request.csr,
        validity_days: request.validity_in_days,
        ekus: &crate::ezca::models::default_ekus(),
        key_usages: &crate::ezca::models::default_key_usages(),
    };
    let der = state
        .authority_of(record)
        .sign(&sign)
        .map_err(|refusal| bad(&refusal.0))?;
    state.journal(crate::emulator::persist::JournalEvent::Issued {
        subject_cn: record.subject_cn.clone(),
        requested_by: record.requested_by.clone(),
        der: der.to_vec(),
    });
    let renewed = IssuedRecord {
        der: der.clone(),
        ca: record.ca,
        subject_cn: record.subject_cn.clone(),
        requested_by: record.requested_by.clone(),
        revoked: false,
    };
    lock(&state.issued).insert(sha1_thumbprint(&der), renewed);
    Ok(der)
}

/// The subject CN and DNS SANs a CSR asks for.
fn csr_names(der: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, csr) = X509CertificationRequest::from_der(der).ok()?;
    let info = &csr.certification_request_info;
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_string);
    let mut sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                if let GeneralName::DNSName(d) = name {
                    sans.push(d.to_string());
                }
            }
        }
    }
    Some((cn, sans))
}
