//! The emulator's certificate authorities: one self-signed P-256 root and, under it, an ECDSA
//! (P-256) and an RSA-2048 issuing CA, as a tenant with several SSL CAs sees them in
//! GetAvailableSSLCAs; and the rules for turning a request into a leaf certificate.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use super::names::Refusal;
use super::names::{San, Subject};
use crate::clock::Clock;

/// What a certificate request asks for, already taken out of its JSON and parsed: the subject
/// and SANs signed are exactly the ones ownership was checked on.
pub struct SignRequest<'a> {
    pub subject: &'a Subject,
    pub sans: &'a [San],
    pub csr_pem: &'a str,
    pub validity_days: i64,
    pub ekus: &'a [String],
    pub key_usages: &'a [String],
}

/// Most EKUs a request may list (the template's own ceiling; EZCA documents none).
const MAX_EKUS: usize = 16;
/// There are nine key usages (RFC 5280 §4.2.1.3).
const MAX_KEY_USAGES: usize = 9;

fn refuse(msg: impl Into<String>) -> Refusal {
    Refusal(msg.into())
}

/// The issuing CAs the emulator runs, in the order GetAvailableSSLCAs lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuingKey {
    EcdsaP256,
    Rsa2048,
}

impl IssuingKey {
    pub const ALL: [IssuingKey; 2] = [IssuingKey::EcdsaP256, IssuingKey::Rsa2048];

    /// `CAKeyType` as GetAvailableSSLCAs reports it.
    pub fn ca_key_type(self) -> &'static str {
        match self {
            IssuingKey::EcdsaP256 => "EC P256",
            IssuingKey::Rsa2048 => "RSA 2048",
        }
    }

    fn label(self) -> &'static str {
        match self {
            IssuingKey::EcdsaP256 => "ECDSA",
            IssuingKey::Rsa2048 => "RSA",
        }
    }

    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            IssuingKey::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            IssuingKey::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// One issuing CA (an SSL CA of the tenant) with the root it chains to.
pub struct Authority {
    pub ca_id: String,
    pub template_id: String,
    pub friendly_name: String,
    pub key: IssuingKey,
    pub max_cert_life_days: u32,
    pub root_der: CertificateDer<'static>,
    pub issuing_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// PKCS#8 of the issuing key, kept so a resumed soak can restore this CA.
    issuing_key_der: Vec<u8>,
    /// Where the issuing CA's certificate is served, written into each leaf's AIA extension.
    ca_issuers_url: String,
    /// Where this CA's CRL is served, written into each leaf's CRL distribution points.
    pub crl_url: String,
    clock: Clock,
}

fn ca_params(cn: &str, constraint: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "fleetsim EZCA emulator");
    params.is_ca = IsCa::Ca(constraint);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(86_400);
    params.not_after = now + Duration::from_secs(10 * 365 * 86_400);
    params
}

impl Authority {
    /// The root and one issuing CA per [`IssuingKey`]. `public_base` is the emulator's URL ending
    /// in `/`.
    pub fn hierarchy(
        name: &str,
        max_cert_life_days: u32,
        public_base: &str,
        clock: Clock,
    ) -> Result<Vec<Self>, rcgen::Error> {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let root_params = ca_params(&format!("{name} Root CA"), BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key)?;
        let root_issuer = Issuer::from_params(&root_params, &root_key);
        IssuingKey::ALL
            .iter()
            .map(|&key| {
                let issuing_key = key.generate()?;
                let friendly_name = format!("{name} {} Issuing CA", key.label());
                let mut issuing_params =
                    ca_params(&friendly_name, BasicConstraints::Constrained(0));
                issuing_params.use_authority_key_identifier_extension = true;
                let issuing = issuing_params.signed_by(&issuing_key, &root_issuer)?;
                let ca_id = uuid::Uuid::new_v4().to_string();
                Ok(Self {
                    ca_issuers_url: format!("{public_base}certs/{ca_id}.cer"),
                    crl_url: format!("{public_base}crl/{ca_id}.crl"),
                    ca_id,
                    template_id: uuid::Uuid::new_v4().to_string(),
                    friendly_name,
                    key,
                    max_cert_life_days,
                    root_der: root.der().clone(),
                    issuing_der: issuing.der().clone(),
                    issuing_key_der: issuing_key.serialize_der(),
                    issuer: Issuer::new(issuing_params, issuing_key),
                    clock,
                })
            })
            .collect()
    }

    /// The CA as it was saved by [`Authority::identity`], serving under `public_base`. Its key
    /// kind and friendly name are read from its certificate.
    pub fn restore(
        id: &crate::emulator::persist::CaIdentity,
        max_cert_life_days: u32,
        public_base: &str,
        clock: Clock,
    ) -> Result<Self, rcgen::Error> {
        let (key, friendly_name) = describe_issuing(&id.issuing_der)
            .ok_or_else(|| rcgen::Error::X509("stored issuing CA certificate".into()))?;
        let algorithm = match key {
            IssuingKey::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            IssuingKey::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        };
        let pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(id.issuing_key_pkcs8.clone()),
            algorithm,
        )?;
        let issuer = Issuer::from_ca_cert_der(&id.issuing_der, pair)?;
        Ok(Self {
            ca_issuers_url: format!("{public_base}certs/{}.cer", id.ca_id),
            crl_url: format!("{public_base}crl/{}.crl", id.ca_id),
            ca_id: id.ca_id.clone(),
            template_id: id.template_id.clone(),
            friendly_name,
            key,
            max_cert_life_days,
            root_der: id.root_der.clone(),
            issuing_der: id.issuing_der.clone(),
            issuer,
            issuing_key_der: id.issuing_key_pkcs8.clone(),
            clock,
        })
    }

    /// What [`Authority::restore`] needs.
    pub fn identity(&self) -> crate::emulator::persist::CaIdentity {
        crate::emulator::persist::CaIdentity {
            ca_id: self.ca_id.clone(),
            template_id: self.template_id.clone(),
            root_der: self.root_der.clone(),
            issuing_der: self.issuing_der.clone(),
            issuing_key_pkcs8: self.issuing_key_der.clone(),
        }
    }

    /// Checks and signs a request. The CSR's own signature is verified; everything else in the
    /// certificate (subject, SANs, EKUs, key usages, validity) comes from the request, as EZCA does.
    pub fn sign(&self, req: &SignRequest) -> Result<CertificateDer<'static>, Refusal> {
        if req.validity_days < 1 || req.validity_days > i64::from(self.max_cert_life_days) {
            return Err(refuse(format!(
                "ValidityInDays must be between 1 and {} for this CA",
                self.max_cert_life_days
            )));
        }
        if req.ekus.len() > MAX_EKUS || req.key_usages.len() > MAX_KEY_USAGES {
            return Err(refuse(format!(
                "at most {MAX_EKUS} EKUs and {MAX_KEY_USAGES} key usages"
            )));
        }
        let csr_der = decode_csr_pem(req.csr_pem)?;
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| refuse(format!("invalid CSR: {e}")))?;

        let mut params = CertificateParams::default();
        params.distinguished_name = req.subject.to_distinguished_name();
        params.subject_alt_names = req
            .sans
            .iter()
            .map(San::to_san_type)
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = req.ekus.iter().map(|o| eku(o)).collect::<Result<_, _>>()?;
        params.key_usages = req
            .key_usages
            .iter()
            .map(|k| key_usage(k))
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now;
        // A compressed day times the validity can be past what a certificate date holds.
        params.not_after = time::Duration::try_from(self.clock.days(req.validity_days as f64))
            .ok()
            .and_then(|d| now.checked_add(d))
            .filter(|t| t.year() <= 9999)
            .ok_or_else(|| refuse("ValidityInDays is past what a certificate date can hold"))?;
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.custom_extensions = vec![aia_extension(&self.ca_issuers_url)];
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec![self.crl_url.clone()],
        }];

        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| refuse(format!("cannot sign: {e}")))?;
        Ok(signed.der().clone())
    }
}

impl Authority {
    /// A CRL listing `revoked` (serial bytes, revocation time), valid for a day of real time,
    /// DER-encoded and signed by the issuing CA.
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, time::OffsetDateTime)],
        number: u64,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let now = time::OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::from_secs(86_400),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: *at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

/// The key kind and the friendly name (its CN) of an issuing CA's certificate.
fn describe_issuing(der: &[u8]) -> Option<(IssuingKey, String)> {
    use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let algorithm = &cert.public_key().algorithm.algorithm;
    let key = if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        IssuingKey::EcdsaP256
    } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
        IssuingKey::Rsa2048
    } else {
        return None;
    };
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some((key, name.to_string()))
}

/// Accepts `CERTIFICATE REQUEST` and `NEW CERTIFICATE REQUEST` armour, CRLF or LF, any line width.
pub fn decode_csr_pem(pem: &str) -> Result<Vec<u8>, Refusal> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let has_armour = pem.contains("-----BEGIN CERTIFICATE REQUEST-----")
        || pem.contains("-----BEGIN NEW CERTIFICATE REQUEST-----");
    if !has_armour {
        return Err(refuse("CSR is not a PEM certificate request"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| refuse("CSR is not valid base64"))
}

fn eku(oid: &str) -> Result<ExtendedKeyUsagePurpose, Refusal> {
    Ok(match oid {
        "1.3.6.1.5.5.7.3.1" => ExtendedKeyUsagePurpose::ServerAuth,
        "1.3.6.1.5.5.7.3.2" => ExtendedKeyUsagePurpose::ClientAuth,
        "1.3.6.1.5.5.7.3.3" => ExtendedKeyUsagePurpose::CodeSigning,
        "1.3.6.1.5.5.7.3.4" => ExtendedKeyUsagePurpose::EmailProtection,
        "2.5.29.37.0" => ExtendedKeyUsagePurpose::Any,
        other => {
            let arcs = other
                .split('.')
                .map(|a| a.parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| refuse(format!("EKU {other:?} is not an OID")))?;
            ExtendedKeyUsagePurpose::Other(arcs)
        }
    })
}

fn key_usage(name: &str) -> Result<KeyUsagePurpose, Refusal> {
    Ok(match name {
        "Digital Signature" => KeyUsagePurpose::DigitalSignature,
        "Key Encipherment" => KeyUsagePurpose::KeyEncipherment,
        "Data Encipherment" => KeyUsagePurpose::DataEncipherment,
        "Key Agreement" => KeyUsagePurpose::KeyAgreement,
        "Non Repudiation" => KeyUsagePurpose::ContentCommitment,
        other => return Err(refuse(format!("unknown key usage {other:?}"))),
    })
}

/// Authority Information Access with one caIssuers URI (RFC 5280 §4.2.2.1), DER by hand since
/// rcgen has no builder for it.
fn aia_extension(url: &str) -> CustomExtension {
    const CA_ISSUERS: [u8; 10] = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let location = der_tlv(0x86, url.as_bytes());
    let description = der_tlv(0x30, &[CA_ISSUERS.as_slice(), &location].concat());
    let value = der_tlv(0x30, &description);
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], value)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CertInfo, DeviceKey, KeyKind};

    #[test]
    fn signs_from_the_request_and_writes_aia() {
        crate::crypto::install_crypto_provider();
        let cas = Authority::hierarchy(
            "T",
            30,
            "https://127.0.0.1:1/",
            Clock::compressed(Duration::from_secs(2)),
        )
        .unwrap();
        assert_eq!(cas.len(), 2);
        assert_eq!(cas[0].root_der, cas[1].root_der, "one root for both");
        assert_ne!(cas[0].ca_id, cas[1].ca_id);
        let ca = &cas[1];
        assert_eq!(ca.key, IssuingKey::Rsa2048);
        let key = DeviceKey::generate(KeyKind::P256).unwrap();
        let csr = key
            .csr_pem("d1")
            .unwrap()
            .replace('\n', "\r\n")
            .replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
        let sans = vec!["d1".to_string()];
        let ekus = crate::ezca::models::default_ekus();
        let kus = crate::ezca::models::default_key_usages();
        let subject = Subject::parse("CN=d1").unwrap();
        let parsed_sans = vec![San::dns("d1").unwrap()];
        let req = SignRequest {
            subject: &subject,
            sans: &parsed_sans,
            csr_pem: &csr,
            validity_days: 10,
            ekus: &ekus,
            key_usages: &kus,
        };
        let der = ca.sign(&req).unwrap();
        let info = CertInfo::parse(&der).unwrap();
        assert_eq!(info.subject_cn.as_deref(), Some("d1"));
        assert_eq!(info.dns_sans, sans);
        assert_eq!((info.not_after - info.not_before).whole_seconds(), 20);
        assert_eq!(
            info.ca_issuers_url,
            Some(format!("https://127.0.0.1:1/certs/{}.cer", ca.ca_id))
        );

        let too_long = SignRequest {
            validity_days: 31,
            ..req
        };
        assert!(ca.sign(&too_long).is_err());
        let tampered = csr.replace("MI", "MJ");
        assert!(
            ca.sign(&SignRequest {
                csr_pem: &tampered,
                validity_days: 10,
                ..too_long
            })
            .is_err()
        );
    }

    #[test]
    fn a_validity_past_certificate_dates_is_refused_not_a_panic() {
        crate::crypto::install_crypto_provider();
        // `emulate --time-scale 5000000000000000000s`: one day is 1.6e11 years of real time.
        let clock = Clock::compressed(Duration::from_secs(5_000_000_000_000_000_000));
        let cas = Authority::hierarchy("T", 30, "https://127.0.0.1:1/", clock).unwrap();
        let key = DeviceKey::generate(KeyKind::P256).unwrap();
        let csr = key.csr_pem("d1").unwrap();
        let (ekus, kus) = (
            crate::ezca::models::default_ekus(),
            crate::ezca::models::default_key_usages(),
        );
        let subject = Subject::parse("CN=d1").unwrap();
        let sans = vec![San::dns("d1").unwrap()];
        let req = SignRequest {
            subject: &subject,
            sans: &sans,
            csr_pem: &csr,
            validity_days: 1,
            ekus: &ekus,
            key_usages: &kus,
        };
        let err = cas[1].sign(&req).unwrap_err();
        assert!(
            format!("{err:?}").contains("past what a certificate date"),
            "{err:?}"
        );
    }
}
