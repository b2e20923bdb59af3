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
use super::issued::IssuedCertificate;
use super::names::San;
use super::state::CaState;
use crate::crypto::{jwt, sha1_thumbprint};
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
/// certificate's record.
fn authenticate(
    state: &CaState,
    authorization: Option<&str>,
    certificate_pem: Option<&str>,
) -> Result<IssuedCertificate, Refused> {
    let unauthorized = |why: &str| refuse(StatusCode::UNAUTHORIZED, why);
    // V2/V3: the certificate travels in the body and must be the one x5t names.
    if let Some(pem) = certificate_pem {
        let cert = crate::crypto::certs_from_pem(pem)
            .ok()
            .and_then(|mut c| (!c.is_empty()).then(|| c.swap_remove(0)))
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "Certificate is not a PEM certificate",
                )
            })?;
        let x5t = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(jwt::parse)
            .and_then(|p| p.header.x5t);
        if x5t.is_some_and(|x5t| !x5t.eq_ignore_ascii_case(&sha1_thumbprint(&cert))) {
            return Err(unauthorized("x5t does not name the certificate"));
        }
    }
    let (parsed, record) = verified_token(state, authorization).map_err(&unauthorized)?;
    let c = &parsed.claims;
    let t = now();
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
    Ok(record)
}

/// Checks a certificate-JWT from the `Authorization` header alone: RS256, `x5t` naming a
/// certificate this CA issued, signed with that certificate's key, for EZCA, valid now. The
/// `jti` is not spent here, so this is also the check made before a request body is read.
pub(super) fn verified_token(
    state: &CaState,
    authorization: Option<&str>,
) -> Result<(jwt::Parsed, IssuedCertificate), &'static str> {
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or("missing bearer token")?;
    let parsed = jwt::parse(token).ok_or("bearer token is not a JWT")?;
    if parsed.header.alg != "RS256" {
        return Err("only RS256 certificate tokens are accepted");
    }
    let x5t = parsed
        .header
        .x5t
        .as_deref()
        .ok_or("token has no x5t")?
        .to_ascii_uppercase();
    let record = lock(&state.issued)
        .get(&x5t)
        .cloned()
        .ok_or("x5t names no certificate of this CA")?;
    if !jwt::verify_signature_spki(&parsed, &record.spki) {
        return Err("token signature does not verify with the certificate's key");
    }
    let c = &parsed.claims;
    if !c
        .aud
        .as_deref()
        .is_some_and(|a| a == jwt::AUDIENCE || a == jwt::AGENT_AUDIENCE)
    {
        return Err("token audience is not EZCA");
    }
    let t = now();
    if c.nbf.is_some_and(|nbf| nbf > t + SKEW_SECS) {
        return Err("token not yet valid");
    }
    if c.exp.is_none_or(|exp| exp + SKEW_SECS <= t) {
        return Err("token expired");
    }
    Ok((parsed, record))
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
        .and_then(|record| renew(state, &record, &request.payload));
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
    let record = match authenticate(state, authorization, None) {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    let result = match renew(state, &record, &request) {
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
        Ok(record) => {
            super::state::revoke(state, &record.thumbprint);
            axum::Json(ApiResult {
                success: true,
                message: "Successful".into(),
            })
            .into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

/// The renewal rules, then a new certificate with the same identity: the subject and every SAN
/// of the certificate renewed.
fn renew(
    state: &CaState,
    record: &IssuedCertificate,
    request: &CertRenewRequest,
) -> Result<CertificateDer<'static>, Refused> {
    let bad = |why: &str| refuse(StatusCode::BAD_REQUEST, why);
    if record.revoked {
        return Err(bad("certificate is revoked"));
    }
    if record.not_after < time::OffsetDateTime::now_utc() {
        return Err(bad("certificate is expired"));
    }
    let csr_der = super::authority::decode_csr_pem(&request.csr)
        .map_err(|_| bad("CSR is not a PEM certificate request"))?;
    let csr = csr_names(&csr_der).ok_or_else(|| bad("invalid CSR"))?;
    if !csr.matches(record) {
        return Err(bad("CSR does not match certificate"));
    }
    let sign = SignRequest {
        subject: &record.subject,
        sans: &record.sans,
        csr_pem: &request.csr,
        validity_days: request.validity_in_days,
        ekus: &crate::ezca::models::default_ekus(),
        key_usages: &crate::ezca::models::default_key_usages(),
    };
    let der = state
        .authority_of(record)
        .sign(&sign)
        .map_err(|refusal| bad(&refusal.0))?;
    super::certificates::record(state, record.ca, &record.requested_by, &der)
        .map_err(|why| bad(&why))?;
    Ok(der)
}

/// The names a renewal CSR asks for.
struct CsrNames {
    common_names: Vec<String>,
    /// Every SAN it asks for (of the kinds the template has; other kinds make it invalid).
    sans: Vec<San>,
}

impl CsrNames {
    /// The CSR keeps the certificate's identity: its one CN is the certificate's, its DNS SANs
    /// are exactly the certificate's (none when the certificate has none: a CSR without SANs
    /// does not renew a certificate with some), and any other SAN it asks for is one the
    /// certificate has.
    fn matches(&self, record: &IssuedCertificate) -> bool {
        let [cn] = self.common_names.as_slice() else {
            return false;
        };
        let has = |set: &[San], san: &San| set.iter().any(|s| s.same_as(san));
        let dns = |set: &[San]| -> Vec<San> {
            set.iter()
                .filter(|s| matches!(s, San::Dns(_)))
                .cloned()
                .collect()
        };
        let (csr_dns, cert_dns) = (dns(&self.sans), dns(&record.sans));
        cn == record.subject_cn()
            && csr_dns.iter().all(|s| has(&cert_dns, s))
            && cert_dns.iter().all(|s| has(&csr_dns, s))
            && self.sans.iter().all(|s| has(&record.sans, s))
    }
}

/// The subject CNs and SANs a CSR asks for.
fn csr_names(der: &[u8]) -> Option<CsrNames> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::FromDer;
    let (_, csr) = X509CertificationRequest::from_der(der).ok()?;
    let info = &csr.certification_request_info;
    let common_names = info
        .subject
        .iter_common_name()
        .map(|c| c.as_str().ok().map(str::to_string))
        .collect::<Option<Vec<_>>>()?;
    let mut sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                sans.push(San::from_general_name(name)?);
            }
        }
    }
    Some(CsrNames { common_names, sans })
}
