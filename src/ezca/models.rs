//! EZCA request and response bodies with the exact JSON names the official clients use
//! (see `reference/ezca-api.md` §4). System.Text.Json on the real service is case-sensitive, so the
//! `rename`s here are part of the protocol, not style. Both the client and the emulator use them.

use serde::{Deserialize, Serialize};

/// `APIResultModel`: the wrapper most management endpoints answer with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ApiResult {
    #[serde(rename = "Success", default)]
    pub success: bool,
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// `AADObjectModel`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AadObject {
    #[serde(rename = "ObjectId", default)]
    pub object_id: String,
    #[serde(rename = "FriendlyName", default)]
    pub friendly_name: Option<String>,
    #[serde(rename = "ObjectType", default = "user")]
    pub object_type: String,
    #[serde(rename = "isValid", default = "yes")]
    pub is_valid: bool,
}

fn user() -> String {
    "User".into()
}
fn yes() -> bool {
    true
}

impl AadObject {
    pub fn user(object_id: &str, friendly_name: Option<&str>) -> Self {
        Self {
            object_id: object_id.into(),
            friendly_name: friendly_name.map(str::to_string),
            object_type: user(),
            is_valid: true,
        }
    }
}

/// `AvailableCAModel`, one entry of `GetAvailableSSLCAs` (a bare JSON array).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AvailableCa {
    #[serde(rename = "CAID")]
    pub ca_id: Option<String>,
    #[serde(rename = "CAFriendlyName")]
    pub friendly_name: Option<String>,
    #[serde(rename = "CATemplateType")]
    pub template_type: Option<String>,
    #[serde(rename = "TemplateID")]
    pub template_id: Option<String>,
    #[serde(rename = "KeyUsage")]
    pub key_usage: Option<String>,
    #[serde(rename = "MaxCertLifeDays", default)]
    pub max_cert_life_days: i64,
    #[serde(rename = "DomainRestrictions")]
    pub domain_restrictions: Option<String>,
    #[serde(rename = "CAKeyType")]
    pub key_type: Option<String>,
    #[serde(rename = "CAHashing")]
    pub hashing: Option<String>,
}

/// `NewDomainRegistrationRequest`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewDomainRequest {
    #[serde(rename = "CAID")]
    pub ca_id: Option<String>,
    #[serde(rename = "TemplateID")]
    pub template_id: Option<String>,
    #[serde(rename = "Domain")]
    pub domain: Option<String>,
    #[serde(rename = "Owners", default)]
    pub owners: Vec<AadObject>,
    #[serde(rename = "Requesters", default)]
    pub requesters: Vec<AadObject>,
    /// May request but not revoke (EZCAClient since Oct 2023).
    #[serde(rename = "RequestersOnly", default)]
    pub requesters_only: Vec<AadObject>,
    #[serde(rename = "NotificationEmails", default)]
    pub notification_emails: Vec<String>,
}

/// `CertificateCreateRequestModel` (RequestSSLCertificate).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertificateCreateRequest {
    #[serde(rename = "SubjectName")]
    pub subject_name: String,
    #[serde(rename = "SubjectAltNames", default)]
    pub subject_alt_names: Vec<String>,
    #[serde(rename = "CAID")]
    pub ca_id: Option<String>,
    #[serde(rename = "TemplateID")]
    pub template_id: Option<String>,
    #[serde(rename = "CSR")]
    pub csr: String,
    #[serde(rename = "ValidityInDays")]
    pub validity_in_days: i64,
    #[serde(rename = "EKUs", default = "default_ekus")]
    pub ekus: Vec<String>,
    #[serde(rename = "KeyUsages", default = "default_key_usages")]
    pub key_usages: Vec<String>,
    #[serde(rename = "SelectedLocation", default = "default_location")]
    pub selected_location: String,
    #[serde(rename = "ResourceID", default)]
    pub resource_id: String,
    #[serde(rename = "SecretName", default)]
    pub secret_name: String,
    #[serde(rename = "AKVName", default)]
    pub akv_name: String,
    #[serde(rename = "AutoRenew", default)]
    pub auto_renew: bool,
    #[serde(
        rename = "AutoRenewPercentage",
        default = "default_auto_renew_percentage"
    )]
    pub auto_renew_percentage: i64,
}

/// `CertRenewReqModel`: the renewal CSR and the validity (the official client sends the old
/// certificate's lifetime in days).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertRenewRequest {
    #[serde(rename = "CSR")]
    pub csr: String,
    #[serde(rename = "ValidityInDays")]
    pub validity_in_days: i64,
}

/// `CertificateAuthenticationPayloadModel<T>`: the current certificate (PEM) and the request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertificateAuthenticationPayload<T> {
    #[serde(rename = "Certificate")]
    pub certificate: String,
    #[serde(rename = "Payload")]
    pub payload: T,
}

/// `SubjectAltValue` of the V2 request: a value and its GeneralName tag (1 email, 2 DNS, 6 URI,
/// 7 IP).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubjectAltValue {
    #[serde(rename = "ValueSTR")]
    pub value: String,
    #[serde(rename = "SubjectAltType")]
    pub kind: i64,
}

pub const SAN_EMAIL: i64 = 1;
pub const SAN_DNS: i64 = 2;
pub const SAN_URI: i64 = 6;
pub const SAN_IP: i64 = 7;

/// `CertificateCreateRequestV2Model` (RequestSSLCertificateV2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertificateCreateRequestV2 {
    #[serde(rename = "SubjectName")]
    pub subject_name: String,
    #[serde(rename = "SubjectAltNames", default)]
    pub subject_alt_names: Vec<SubjectAltValue>,
    #[serde(rename = "CAID")]
    pub ca_id: String,
    #[serde(rename = "TemplateID")]
    pub template_id: String,
    #[serde(rename = "CSR")]
    pub csr: String,
    #[serde(rename = "ValidityInDays")]
    pub validity_in_days: i64,
    #[serde(rename = "EKUs", default = "default_ekus")]
    pub ekus: Vec<String>,
    #[serde(rename = "KeyUsages", default = "default_key_usages")]
    pub key_usages: Vec<String>,
    #[serde(rename = "SelectedLocation", default = "default_location")]
    pub selected_location: String,
    #[serde(rename = "ResourceID", default)]
    pub resource_id: String,
    #[serde(rename = "SecretName", default)]
    pub secret_name: String,
    #[serde(rename = "AKVName", default)]
    pub akv_name: String,
    #[serde(rename = "AutoRenew", default)]
    pub auto_renew: bool,
    #[serde(
        rename = "AutoRenewPercentage",
        default = "default_auto_renew_percentage"
    )]
    pub auto_renew_percentage: i64,
    #[serde(rename = "SID", default)]
    pub sid: String,
}

/// `CertificateCreatedResponse`: the leaf, its issuer and (maybe empty) root, one PEM each.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CertificateCreatedResponse {
    #[serde(rename = "CertificatePEM")]
    pub certificate_pem: String,
    #[serde(rename = "IssuingCACertificate", default)]
    pub issuing_ca_certificate: String,
    #[serde(rename = "RootCertificate", default)]
    pub root_certificate: String,
}

/// `DomainInformationModel` (GetMyDomains, inside `Message`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainInformation {
    #[serde(rename = "CAID")]
    pub ca_id: String,
    #[serde(rename = "TemplateID")]
    pub template_id: String,
    #[serde(rename = "DomainID")]
    pub domain_id: String,
    #[serde(rename = "Domain")]
    pub domain: String,
    #[serde(rename = "CAFriendlyName")]
    pub ca_friendly_name: String,
    #[serde(rename = "IsOwner")]
    pub is_owner: bool,
    #[serde(rename = "IsRequester")]
    pub is_requester: bool,
    #[serde(rename = "Owners", default)]
    pub owners: Vec<AadObject>,
    #[serde(rename = "Requesters", default)]
    pub requesters: Vec<AadObject>,
    #[serde(rename = "RequestersOnly", default)]
    pub requesters_only: Vec<AadObject>,
    #[serde(rename = "NotificationEmails", default)]
    pub notification_emails: Vec<String>,
}

/// The body of `RevokeCertificateV2`: the certificate by SHA-1 thumbprint (hex, any case).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RevokeRequest {
    #[serde(rename = "CAID")]
    pub ca_id: String,
    #[serde(rename = "TemplateID")]
    pub template_id: String,
    #[serde(rename = "Thumbprint")]
    pub thumbprint: String,
}

pub const EKU_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
pub const EKU_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

pub fn default_ekus() -> Vec<String> {
    vec![EKU_SERVER_AUTH.into(), EKU_CLIENT_AUTH.into()]
}
pub fn default_key_usages() -> Vec<String> {
    vec!["Key Encipherment".into(), "Digital Signature".into()]
}
fn default_location() -> String {
    "IoT Device".into()
}
fn default_auto_renew_percentage() -> i64 {
    80
}

impl CertificateCreateRequest {
    /// The request the IoT samples send for one device: `CN=<id>`, DNS SAN `<id>`, server and
    /// client auth EKUs, digital signature and key encipherment.
    pub fn for_device(
        ca: &AvailableCa,
        device_id: &str,
        csr: String,
        validity_in_days: i64,
    ) -> Self {
        Self {
            subject_name: subject_name_for(device_id),
            subject_alt_names: vec![device_id.to_string()],
            ca_id: ca.ca_id.clone(),
            template_id: ca.template_id.clone(),
            csr,
            validity_in_days,
            ekus: default_ekus(),
            key_usages: default_key_usages(),
            selected_location: default_location(),
            resource_id: String::new(),
            secret_name: String::new(),
            akv_name: String::new(),
            auto_renew: false,
            auto_renew_percentage: default_auto_renew_percentage(),
        }
    }
}

/// `CN=<common_name>` as an RFC 4514 string: the characters that separate or quote in a
/// distinguished name (`, + " \ < > ;`, a leading `#` or space, a trailing space) are escaped,
/// so a device id that contains them (IoT Hub allows `, + ; =` in ids) stays one CN.
pub fn subject_name_for(common_name: &str) -> String {
    let last = common_name.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(common_name.len() + 3);
    out.push_str("CN=");
    for (i, c) in common_name.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i == last);
        if ",+\"\\<>;".contains(c) || (c == '#' && i == 0) || edge_space {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uses_exact_json_names() {
        let ca = AvailableCa {
            ca_id: Some("c".into()),
            friendly_name: None,
            template_type: None,
            template_id: Some("t".into()),
            key_usage: None,
            max_cert_life_days: 30,
            domain_restrictions: None,
            key_type: None,
            hashing: None,
        };
        let v = serde_json::to_value(CertificateCreateRequest::for_device(
            &ca,
            "d1",
            "csr".into(),
            10,
        ))
        .unwrap();
        for key in [
            "SubjectName",
            "SubjectAltNames",
            "CAID",
            "TemplateID",
            "CSR",
            "ValidityInDays",
            "EKUs",
            "KeyUsages",
            "SelectedLocation",
            "ResourceID",
            "SecretName",
            "AKVName",
            "AutoRenew",
            "AutoRenewPercentage",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["SubjectName"], "CN=d1");
        let r: ApiResult = serde_json::from_str(r#"{"Success":true,"Message":"x"}"#).unwrap();
        assert!(r.success);
    }
}
