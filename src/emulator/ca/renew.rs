//! Renewal authenticated by the certificate being renewed (reference §5.5, §6):
//! `POST api/Certificates/RenewCertificateV2` with an RS256 certificate-JWT as bearer and
//! `{"Certificate": PEM, "Payload": {"CSR", "ValidityInDays"}}` as body; the answer is the new
//! certificate's PEM as the whole body. Refusals are plain-text `Error: ...` bodies: 401 when the
//! token does not authenticate, 400 when the request breaks a rule.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls_pki_types::CertificateDer;

use super::authority::SignRequest;
use super::{CaState, IssuedRecord};
use crate::crypto::{CertInfo, jwt, sha1_thumbprint};
use crate::ezca::models::{CertRenewRequest, CertificateAuthenticationPayload};

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
    certificate_pem: &str,
) -> Result<(CertificateDer<'static>, IssuedRecord), Refused> {
    let unauthorized = |why: &str| refuse(StatusCode::UNAUTHORIZED, why);
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    let parsed = jwt::parse(token).ok_or_else(|| unauthorized("bearer token is not a JWT"))?;
    if parsed.header.alg != "RS256" {
        return Err(unauthorized("only RS256 certificate tokens are accepted"));
    }
    let cert = crate::crypto::certs_from_pem(certificate_pem)
        .ok()
        .and_then(|mut c| (!c.is_empty()).then(|| c.swap_remove(0)))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "Certificate is not a PEM certificate",
            )
        })?;
    let thumbprint = sha1_thumbprint(&cert);
    if !parsed
        .header
        .x5t
        .as_deref()
        .is_some_and(|x| x.eq_ignore_ascii_case(&thumbprint))
    {
        return Err(unauthorized("x5t does not name the certificate"));
    }
    let record = state
        .issued
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&thumbprint)
        .cloned()
        .ok_or_else(|| unauthorized("certificate was not issued by this CA"))?;
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
    let mut seen = state.seen_jti.lock().unwrap_or_else(|p| p.into_inner());
    if seen.len() > 100_000 {
        seen.retain(|_, exp| *exp + SKEW_SECS > t);
    }
    if seen.insert(jti, c.exp.unwrap_or(t)).is_some() {
        return Err(unauthorized("token was already used (jti replay)"));
    }
    Ok((cert, record))
}

pub(super) fn renew_v2(state: &CaState, authorization: Option<&str>, body: &[u8]) -> Response {
    let request: CertificateAuthenticationPayload<CertRenewRequest> =
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("request body is not valid JSON: {e}"),
                )
                .into_response();
            }
        };
    let (cert, record) = match authenticate(state, authorization, &request.certificate) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let bad = |why: &str| refuse(StatusCode::BAD_REQUEST, why).into_response();
    if record.revoked {
        return bad("certificate is revoked");
    }
    let Ok(current) = CertInfo::parse(&cert) else {
        return bad("certificate does not parse");
    };
    if current.not_after < time::OffsetDateTime::now_utc() {
        return bad("certificate is expired");
    }
    // The renewal keeps the identity: the CSR must name the same subject and SANs.
    let Ok(csr_der) = super::authority::decode_csr_pem(&request.payload.csr) else {
        return bad("CSR is not a PEM certificate request");
    };
    let Some((csr_cn, csr_sans)) = csr_names(&csr_der) else {
        return bad("invalid CSR");
    };
    if csr_cn != current.subject_cn || (!csr_sans.is_empty() && csr_sans != current.dns_sans) {
        return bad("CSR does not match certificate");
    }
    let subject = format!("CN={}", current.subject_cn.clone().unwrap_or_default());
    let sign = SignRequest {
        subject_name: &subject,
        dns_sans: &current.dns_sans,
        csr_pem: &request.payload.csr,
        validity_days: request.payload.validity_in_days,
        ekus: &crate::ezca::models::default_ekus(),
        key_usages: &crate::ezca::models::default_key_usages(),
    };
    let der = match state.authority.sign(&sign) {
        Ok(d) => d,
        Err(refusal) => return bad(&refusal.0),
    };
    let renewed = IssuedRecord {
        der: der.clone(),
        subject_cn: record.subject_cn.clone(),
        requested_by: record.requested_by.clone(),
        revoked: false,
    };
    state
        .issued
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sha1_thumbprint(&der), renewed);
    drop(cert);
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        crate::crypto::cert_to_pem(&der),
    )
        .into_response()
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
