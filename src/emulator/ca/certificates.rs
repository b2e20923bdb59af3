//! What an Azure AD caller can do with certificates: request them (V1 wrapped, V1 full-chain, V2),
//! list the domains it may request for, and revoke by thumbprint. Every request is checked against
//! domain ownership, the CA's limits and the CSR's signature before anything is signed.

use rustls_pki_types::CertificateDer;

use super::authority::SignRequest;
use super::issued::IssuedCertificate;
use super::names::{San, Subject, parse_sans};
use super::state::CaState;
use crate::crypto::{cert_to_pem, sha1_thumbprint};
use crate::emulator::token::Caller;
use crate::ezca::models::{
    AadObject, CertificateCreateRequest, CertificateCreateRequestV2, CertificateCreatedResponse,
    DomainInformation, RevokeRequest, SubjectAltValue,
};
use crate::sync::lock;

pub(super) fn may_request(state: &CaState, caller: &Caller, name: &str) -> bool {
    let domains = lock(&state.domains);
    domains
        .get(&name.to_ascii_lowercase())
        .is_some_and(|d| d.owners.contains(&caller.oid) || d.requesters.contains(&caller.oid))
}

/// A request's names as they will be certified: its subject and every SAN, parsed once.
struct Names {
    subject: Subject,
    sans: Vec<San>,
}

impl Names {
    fn parse(
        subject_name: &str,
        dns: &[String],
        typed: &[SubjectAltValue],
    ) -> Result<Self, String> {
        Ok(Self {
            subject: Subject::parse(subject_name).map_err(|r| r.0)?,
            sans: parse_sans(dns, typed).map_err(|r| r.0)?,
        })
    }

    /// Refuses unless `caller` owns or may request for the CN and the name of every SAN.
    fn check_ownership(&self, state: &CaState, caller: &Caller) -> Result<(), String> {
        let cn = self.subject.common_name().to_string();
        for name in std::iter::once(cn).chain(self.sans.iter().map(San::owned_name)) {
            if !may_request(state, caller, &name) {
                return Err(format!(
                    "You are not an owner or requester of domain {name}"
                ));
            }
        }
        Ok(())
    }
}

/// What the rest of a request asks for, besides its names.
struct Terms<'a> {
    csr_pem: &'a str,
    validity_days: i64,
    ekus: &'a [String],
    key_usages: &'a [String],
}

/// Checks ownership of exactly the names `names` will certify, signs with issuing CA `ca`, and
/// records the certificate.
fn issue(
    state: &CaState,
    ca: usize,
    caller: &Caller,
    names: &Names,
    terms: &Terms,
) -> Result<CertificateDer<'static>, String> {
    names.check_ownership(state, caller)?;
    let sign = SignRequest {
        subject: &names.subject,
        sans: &names.sans,
        csr_pem: terms.csr_pem,
        validity_days: terms.validity_days,
        ekus: terms.ekus,
        key_usages: terms.key_usages,
    };
    let der = state.authorities[ca].sign(&sign).map_err(|r| r.0)?;
    record(state, ca, &caller.oid, &der)?;
    Ok(der)
}

/// Journals a certificate just signed (the journal keeps its DER) and remembers it.
pub(super) fn record(
    state: &CaState,
    ca: usize,
    requested_by: &str,
    der: &CertificateDer<'static>,
) -> Result<IssuedCertificate, String> {
    let entry = IssuedCertificate::from_der(der, ca, requested_by, false)
        .ok_or("the certificate just signed does not parse")?;
    state.journal(crate::emulator::persist::JournalEvent::Issued {
        subject_cn: entry.subject_cn().to_string(),
        requested_by: requested_by.to_string(),
        der: der.to_vec(),
    });
    lock(&state.issued).insert(entry.clone(), state.retention);
    Ok(entry)
}

/// `RequestSSLCertificate` and `RequestFullSSLCertificate` (same request, other reply shape).
pub(super) fn request_v1(
    state: &CaState,
    caller: &Caller,
    req: &CertificateCreateRequest,
) -> Result<CertificateDer<'static>, String> {
    crate::inject::panic_at("emulator.ca");
    let (ca, _) = state.authority(req.ca_id.as_deref(), req.template_id.as_deref())?;
    let names = Names::parse(&req.subject_name, &req.subject_alt_names, &[])?;
    let terms = Terms {
        csr_pem: &req.csr,
        validity_days: req.validity_in_days,
        ekus: &req.ekus,
        key_usages: &req.key_usages,
    };
    issue(state, ca, caller, &names, &terms)
}

/// `RequestSSLCertificateV2`: SANs are typed values (DNS, e-mail, URI, IP), each checked for
/// ownership.
pub(super) fn request_v2(
    state: &CaState,
    caller: &Caller,
    req: &CertificateCreateRequestV2,
) -> Result<CertificateDer<'static>, String> {
    let (ca, _) = state.authority(Some(&req.ca_id), Some(&req.template_id))?;
    let names = Names::parse(&req.subject_name, &[], &req.subject_alt_names)?;
    let terms = Terms {
        csr_pem: &req.csr,
        validity_days: req.validity_in_days,
        ekus: &req.ekus,
        key_usages: &req.key_usages,
    };
    issue(state, ca, caller, &names, &terms)
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
        .map(|r| r.subject_cn().to_string())
        .ok_or("Certificate not found")?;
    if !may_request(state, caller, &subject) {
        return Err(format!(
            "You are not an owner or requester of domain {subject}"
        ));
    }
    super::state::revoke(state, &thumbprint);
    Ok("Successful".into())
}
