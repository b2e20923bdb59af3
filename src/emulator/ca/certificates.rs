//! What an Azure AD caller can do with certificates: request them (V1 wrapped, V1 full-chain, V2),
//! list the domains it may request for, and revoke by thumbprint. Every request is checked against
//! domain ownership, the CA's limits and the CSR's signature before anything is signed.

use rustls_pki_types::CertificateDer;

use super::authority::{SignRequest, subject_cn};
use super::state::CaState;
use crate::crypto::{cert_to_pem, sha1_thumbprint};
use crate::emulator::persist::IssuedRecord;
use crate::emulator::token::Caller;
use crate::ezca::models::{
    AadObject, CertificateCreateRequest, CertificateCreateRequestV2, CertificateCreatedResponse,
    DomainInformation, RevokeRequest, SAN_DNS,
};
use crate::sync::lock;

pub(super) fn may_request(state: &CaState, caller: &Caller, name: &str) -> bool {
    let domains = lock(&state.domains);
    domains
        .get(&name.to_ascii_lowercase())
        .is_some_and(|d| d.owners.contains(&caller.oid) || d.requesters.contains(&caller.oid))
}

/// Checks ownership of every name, signs with issuing CA `ca`, and records the certificate.
fn issue(
    state: &CaState,
    ca: usize,
    caller: &Caller,
    sign: &SignRequest,
) -> Result<CertificateDer<'static>, String> {
    let cn = subject_cn(sign.subject_name).ok_or("SubjectName must contain CN=")?;
    for name in std::iter::once(cn).chain(sign.dns_sans.iter().map(String::as_str)) {
        if !may_request(state, caller, name) {
            return Err(format!(
                "You are not an owner or requester of domain {name}"
            ));
        }
    }
    let der = state.authorities[ca].sign(sign).map_err(|r| r.0)?;
    let record = IssuedRecord {
        der: der.clone(),
        ca,
        subject_cn: cn.to_string(),
        requested_by: caller.oid.clone(),
        revoked: false,
    };
    lock(&state.issued).insert(sha1_thumbprint(&der), record);
    state.journal(crate::emulator::persist::JournalEvent::Issued {
        subject_cn: cn.to_string(),
        requested_by: caller.oid.clone(),
        der: der.to_vec(),
    });
    Ok(der)
}

/// `RequestSSLCertificate` and `RequestFullSSLCertificate` (same request, other reply shape).
pub(super) fn request_v1(
    state: &CaState,
    caller: &Caller,
    req: &CertificateCreateRequest,
) -> Result<CertificateDer<'static>, String> {
    let (ca, _) = state.authority(req.ca_id.as_deref(), req.template_id.as_deref())?;
    issue(
        state,
        ca,
        caller,
        &SignRequest {
            subject_name: &req.subject_name,
            dns_sans: &req.subject_alt_names,
            other_sans: &[],
            csr_pem: &req.csr,
            validity_days: req.validity_in_days,
            ekus: &req.ekus,
            key_usages: &req.key_usages,
        },
    )
}

/// `RequestSSLCertificateV2`: SANs are typed values (DNS names checked for ownership).
pub(super) fn request_v2(
    state: &CaState,
    caller: &Caller,
    req: &CertificateCreateRequestV2,
) -> Result<CertificateDer<'static>, String> {
    let (ca, _) = state.authority(Some(&req.ca_id), Some(&req.template_id))?;
    let dns: Vec<String> = req
        .subject_alt_names
        .iter()
        .filter(|s| s.kind == SAN_DNS)
        .map(|s| s.value.clone())
        .collect();
    let other: Vec<_> = req
        .subject_alt_names
        .iter()
        .filter(|s| s.kind != SAN_DNS)
        .cloned()
        .collect();
    issue(
        state,
        ca,
        caller,
        &SignRequest {
            subject_name: &req.subject_name,
            dns_sans: &dns,
            other_sans: &other,
            csr_pem: &req.csr,
            validity_days: req.validity_in_days,
            ekus: &req.ekus,
            key_usages: &req.key_usages,
        },
    )
}

/// The bare `CertificateCreatedResponse` for a leaf this emulator issued, with its own issuing CA.
pub(super) fn created(
    state: &CaState,
    leaf: &CertificateDer<'static>,
) -> CertificateCreatedResponse {
    let ca = lock(&state.issued)
        .get(&sha1_thumbprint(leaf))
        .map_or(0, |r| r.ca);
    let a = &state.authorities[ca];
    CertificateCreatedResponse {
        certificate_pem: cert_to_pem(leaf),
        issuing_ca_certificate: cert_to_pem(&a.issuing_der),
        root_certificate: cert_to_pem(&a.root_der),
    }
}

/// `GetMyDomains`: `Message` carries the JSON array of the caller's domains.
pub(super) fn my_domains(state: &CaState, caller: &Caller) -> Result<String, String> {
    let domains = lock(&state.domains);
    let user = |oid: &String| AadObject::user(oid, None);
    let mine: Vec<DomainInformation> = domains
        .iter()
        .filter(|(_, d)| d.owners.contains(&caller.oid) || d.requesters.contains(&caller.oid))
        .map(|(name, d)| (name, d, &state.authorities[d.ca]))
        .map(|(name, d, a)| DomainInformation {
            ca_id: a.ca_id.clone(),
            template_id: a.template_id.clone(),
            domain_id: d.id.clone(),
            domain: name.clone(),
            ca_friendly_name: a.friendly_name.clone(),
            is_owner: d.owners.contains(&caller.oid),
            is_requester: d.requesters.contains(&caller.oid),
            owners: d.owners.iter().map(user).collect(),
            requesters: d.requesters.iter().map(user).collect(),
            requesters_only: Vec::new(),
            notification_emails: Vec::new(),
        })
        .collect();
    serde_json::to_string(&mine).map_err(|e| e.to_string())
}

/// `RevokeCertificateV2`: owners and requesters of the certificate's domain may revoke it.
pub(super) fn revoke_v2(
    state: &CaState,
    caller: &Caller,
    req: &RevokeRequest,
) -> Result<String, String> {
    state.authority(Some(&req.ca_id), Some(&req.template_id))?;
    let thumbprint = req.thumbprint.trim().to_ascii_uppercase();
    let subject = lock(&state.issued)
        .get(&thumbprint)
        .map(|r| r.subject_cn.clone())
        .ok_or("Certificate not found")?;
    if !may_request(state, caller, &subject) {
        return Err(format!(
            "You are not an owner or requester of domain {subject}"
        ));
    }
    super::state::revoke(state, &thumbprint);
    Ok("Successful".into())
}
