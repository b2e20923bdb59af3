//! Enrolments as DPS's service REST API exchanges them (api-version 2021-10-01, camelCase on the
//! wire): enrolment groups, individual enrolments, their X.509 attestation and allocation
//! settings; and the checked form the emulator keeps of each (`Stored`): the certificates it
//! trusts, decoded once, and a chain verifier anchored at them.
//!
//! Only X.509 attestation is emulated (TPM is not offered over MQTT, symmetric keys are not what
//! fleetsim's devices hold). A group trusts devices whose chain reaches one of its signing
//! certificates (`signingCertificates`, PEM or base64 DER, or `caReferences` to a certificate
//! uploaded to the service); an individual enrolment trusts its device's own certificate
//! (`clientCertificates`). Replies carry certificate `info` and no certificate, as DPS's do.

use std::sync::Arc;

use base64::Engine;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::error::DpsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}

/// How devices are spread over the linked hubs. `geoLatency` and `custom` (an Azure Function)
/// are refused: on loopback every hub is equally near, and there is no function to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AllocationPolicy {
    Hashed,
    Static,
    GeoLatency,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    /// Re-registration may move the device to another hub.
    #[serde(default = "yes")]
    pub update_hub_assignment: bool,
    /// A moved device's twin goes with it (substatus `deviceDataMigrated`), or is reset
    /// (`deviceDataReset`).
    #[serde(default = "yes")]
    pub migrate_device_data: bool,
}

fn yes() -> bool {
    true
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        Self {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

/// What DPS shows of a stored certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateInfo {
    pub subject_name: String,
    pub sha1_thumbprint: String,
    pub sha256_thumbprint: String,
    pub issuer_name: String,
    pub not_before_utc: String,
    pub not_after_utc: String,
    pub serial_number: String,
    pub version: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateWithInfo {
    /// PEM or base64 DER on the way in; `null` on the way out.
    #[serde(default)]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<X509CertificateInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Certificates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<X509CertificateWithInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<X509CertificateWithInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CaReferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Attestation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<X509Certificates>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificates: Option<X509Certificates>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_references: Option<X509CaReferences>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// `x509` (also `tpm`, `symmetricKey`, `none` in DPS; refused here).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Attestation>,
}

/// The settings groups and individual enrolments share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub attestation: Attestation,
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    #[serde(default)]
    pub reprovision_policy: ReprovisionPolicy,
    /// Absent: the service default, `hashed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<AllocationPolicy>,
    /// Host names of linked hubs the devices may go to (empty: all linked hubs).
    #[serde(default)]
    pub iot_hubs: Vec<String>,
    /// Deprecated single-hub form of `iotHubs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
}

impl Settings {
    /// The hubs this enrolment names, `iotHubs` first.
    pub fn hub_names(&self) -> Vec<String> {
        let mut hubs = self.iot_hubs.clone();
        if let Some(h) = &self.iot_hub_host_name
            && !hubs.iter().any(|x| x.eq_ignore_ascii_case(h))
        {
            hubs.push(h.clone());
        }
        hubs
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    pub enrollment_group_id: String,
    #[serde(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollment {
    pub registration_id: String,
    /// The hub device id; the registration id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(flatten)]
    pub settings: Settings,
}

/// An enrolment as the emulator keeps it: what GET returns, and what matching needs.
pub(super) struct Stored<T> {
    pub reply: T,
    /// The certificates the enrolment trusts (signing CAs of a group, the device's own
    /// certificate for an individual enrolment).
    pub certs: Vec<CertificateDer<'static>>,
    /// Verifies a device chain up to one of `certs` (groups only).
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// Decodes one certificate given as PEM or as base64 DER.
fn decode_certificate(text: &str) -> Result<CertificateDer<'static>, DpsError> {
    let bad = |why: &str| DpsError::bad_request(format!("certificate: {why}"));
    let der = if text.contains("-----BEGIN") {
        let mut certs = crate::crypto::certs_from_pem(text).map_err(|e| bad(&e.to_string()))?;
        if certs.len() != 1 {
            return Err(bad("expected exactly one PEM certificate"));
        }
        certs.remove(0)
    } else {
        let compact: String = text.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(CertificateDer::from)
            .map_err(|_| bad("neither PEM nor base64 DER"))?
    };
    crate::crypto::CertInfo::parse(&der).map_err(|e| bad(&e.to_string()))?;
    Ok(der)
}

/// DPS's `info` for a certificate.
fn info_of(der: &[u8]) -> Result<X509CertificateInfo, DpsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| DpsError::bad_request(format!("certificate: {e}")))?;
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    Ok(X509CertificateInfo {
        subject_name: cert.subject().to_string(),
        sha1_thumbprint: crate::crypto::sha1_thumbprint(der),
        sha256_thumbprint: crate::crypto::hex_upper(sha256.as_ref()),
        issuer_name: cert.issuer().to_string(),
        not_before_utc: super::error::format_utc(cert.validity().not_before.to_datetime()),
        not_after_utc: super::error::format_utc(cert.validity().not_after.to_datetime()),
        serial_number: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        version: cert.version().0 + 1,
    })
}

/// Replaces each certificate of `slot` by its info, collecting the DER.
fn take_certificates(
    slot: &mut Option<X509Certificates>,
    into: &mut Vec<CertificateDer<'static>>,
) -> Result<(), DpsError> {
    let Some(certs) = slot else { return Ok(()) };
    for c in [&mut certs.primary, &mut certs.secondary]
        .into_iter()
        .flatten()
    {
        let text = c
            .certificate
            .take()
            .ok_or_else(|| DpsError::bad_request("certificate is missing"))?;
        let der = decode_certificate(&text)?;
        c.info = Some(info_of(&der)?);
        into.push(der);
    }
    Ok(())
}

/// Checks an enrolment's X.509 attestation and returns the certificates it trusts. `client`:
/// an individual enrolment (`clientCertificates`), else a group (`signingCertificates` or
/// `caReferences`). `ca` resolves a CA reference to an uploaded certificate.
pub(super) fn trusted_certificates(
    settings: &mut Settings,
    client: bool,
    ca: impl Fn(&str) -> Option<CertificateDer<'static>>,
) -> Result<Vec<CertificateDer<'static>>, DpsError> {
    if !settings.attestation.kind.eq_ignore_ascii_case("x509") {
        return Err(DpsError::bad_request(format!(
            "attestation type '{}' is not emulated; use x509",
            settings.attestation.kind
        )));
    }
    let x509 = settings
        .attestation
        .x509
        .as_mut()
        .ok_or_else(|| DpsError::bad_request("attestation.x509 is missing"))?;
    let mut certs = Vec::new();
    if client {
        take_certificates(&mut x509.client_certificates, &mut certs)?;
    } else {
        take_certificates(&mut x509.signing_certificates, &mut certs)?;
        if let Some(refs) = &x509.ca_references {
            for name in [&refs.primary, &refs.secondary].into_iter().flatten() {
                let der = ca(name).ok_or_else(|| {
                    DpsError::bad_request(format!("CA certificate '{name}' is not uploaded"))
                })?;
                certs.push(der);
            }
        }
    }
    if certs.is_empty() {
        let wanted = match client {
            true => "x509.clientCertificates.primary",
            false => "x509.signingCertificates.primary or x509.caReferences.primary",
        };
        return Err(DpsError::bad_request(format!("{wanted} is required")));
    }
    Ok(certs)
}

/// A verifier of device chains anchored at `certs` (a signing certificate may be a root or an
/// intermediate: either is a trust anchor for its group).
pub(super) fn chain_verifier(
    certs: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, DpsError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs {
        store
            .add(c.clone())
            .map_err(|e| DpsError::bad_request(format!("signing certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| DpsError::bad_request(format!("signing certificate: {e}")))
}

/// Valid identifiers: DPS allows up to 128 alphanumerics and `- . _ :` (lower case for
/// registration ids; enrolment group ids keep their case).
pub(super) fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_json_round_trips_with_dps_names() {
        let json = serde_json::json!({
            "enrollmentGroupId": "g1",
            "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "root"}}},
            "provisioningStatus": "disabled",
            "allocationPolicy": "hashed",
            "iotHubs": ["a.azure-devices.net"],
            "reprovisionPolicy": {"updateHubAssignment": false},
        });
        let g: EnrollmentGroup = serde_json::from_value(json).unwrap();
        assert_eq!(g.settings.provisioning_status, ProvisioningStatus::Disabled);
        assert_eq!(g.settings.allocation_policy, Some(AllocationPolicy::Hashed));
        assert!(!g.settings.reprovision_policy.update_hub_assignment);
        assert!(g.settings.reprovision_policy.migrate_device_data);
        let back = serde_json::to_value(&g).unwrap();
        assert_eq!(back["enrollmentGroupId"], "g1");
        assert_eq!(back["iotHubs"][0], "a.azure-devices.net");
        assert_eq!(
            back["attestation"]["x509"]["caReferences"]["primary"],
            "root"
        );
    }

    #[test]
    fn certificates_are_read_as_pem_or_base64_and_replaced_by_info() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.der());
        for text in [cert.pem(), b64] {
            let mut settings: Settings = serde_json::from_value(serde_json::json!({
                "attestation": {"type": "x509", "x509": {"signingCertificates":
                    {"primary": {"certificate": text}}}},
            }))
            .unwrap();
            let certs = trusted_certificates(&mut settings, false, |_| None).unwrap();
            assert_eq!(certs, vec![cert.der().clone()]);
            let primary = settings
                .attestation
                .x509
                .unwrap()
                .signing_certificates
                .unwrap();
            let primary = primary.primary.unwrap();
            assert!(primary.certificate.is_none());
            assert_eq!(
                primary.info.unwrap().sha1_thumbprint,
                crate::crypto::sha1_thumbprint(cert.der())
            );
        }
    }

    #[test]
    fn attestations_without_a_usable_certificate_are_refused() {
        let mut tpm: Settings =
            serde_json::from_value(serde_json::json!({"attestation": {"type": "tpm"}})).unwrap();
        assert_eq!(
            trusted_certificates(&mut tpm, false, |_| None)
                .unwrap_err()
                .status,
            400
        );
        let mut unknown_ref: Settings = serde_json::from_value(serde_json::json!({
            "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "nope"}}},
        }))
        .unwrap();
        let e = trusted_certificates(&mut unknown_ref, false, |_| None).unwrap_err();
        assert!(e.message.contains("nope"));
        let mut garbage: Settings = serde_json::from_value(serde_json::json!({
            "attestation": {"type": "x509", "x509": {"signingCertificates":
                {"primary": {"certificate": "not a certificate"}}}},
        }))
        .unwrap();
        assert_eq!(
            trusted_certificates(&mut garbage, false, |_| None)
                .unwrap_err()
                .status,
            400
        );
    }
}
