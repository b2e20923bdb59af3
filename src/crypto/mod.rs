//! Keys, CSRs and certificates on the device side, and the PEM/X.509 helpers both sides share.
//!
//! Keys come from rcgen on aws-lc-rs (the only rcgen backend that can generate RSA keys).
//! Private keys stay in memory in [`DeviceKey`] and are never formatted into logs: its `Debug`
//! prints the key kind only.

pub mod jwt;
pub mod pool;
pub mod verification;

use std::fmt;
use std::sync::Once;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, RsaKeySize};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key generation failed: {0}")]
    KeyGen(rcgen::Error),
    #[error("CSR could not be built: {0}")]
    Csr(rcgen::Error),
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("no certificate in PEM text")]
    NoCertificate,
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("certificate does not parse: {0}")]
    Certificate(String),
}

/// The key kinds a device may use. P-256 is the default because it is ~2,000× cheaper to generate
/// than RSA-2048 (see DESIGN.md).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
pub enum KeyKind {
    #[default]
    #[serde(rename = "p256")]
    P256,
    #[serde(rename = "p384")]
    P384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyKind {
    pub const ALL: [KeyKind; 5] = [
        KeyKind::P256,
        KeyKind::P384,
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::Rsa4096,
    ];

    /// The name used in scenarios, on the command line and as the pool's directory.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::P256 => "p256",
            KeyKind::P384 => "p384",
            KeyKind::Rsa2048 => "rsa-2048",
            KeyKind::Rsa3072 => "rsa-3072",
            KeyKind::Rsa4096 => "rsa-4096",
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096)
    }
}

impl std::str::FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = KeyKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown key kind {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Makes aws-lc-rs the process-wide rustls provider. Idempotent; called by every entry point that
/// builds TLS configs, because a second provider in the dependency tree would otherwise make
/// rustls refuse to pick one.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first by the embedding program; keep theirs.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A device's private key.
pub struct DeviceKey {
    kind: KeyKind,
    pair: KeyPair,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({:?}, <private>)", self.kind)
    }
}

impl DeviceKey {
    pub fn generate(kind: KeyKind) -> Result<Self, CryptoError> {
        let pair = match kind {
            KeyKind::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyKind::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyKind::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyKind::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
        }
        .map_err(CryptoError::KeyGen)?;
        Ok(Self { kind, pair })
    }

    /// A key read back from PKCS#8 PEM (as [`DeviceKey::private_key_pem`] writes it), checked to
    /// be of `kind`.
    pub fn from_pkcs8_pem(kind: KeyKind, pem: &str) -> Result<Self, CryptoError> {
        let alg = match kind {
            KeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => &rcgen::PKCS_RSA_SHA256,
        };
        let pair = KeyPair::from_pem_and_sign_algo(pem, alg).map_err(CryptoError::KeyGen)?;
        if kind.is_rsa() {
            // The RSA size is not part of the algorithm: check the modulus length.
            let bits = rsa_bits(&pair);
            let want = match kind {
                KeyKind::Rsa2048 => 2048,
                KeyKind::Rsa3072 => 3072,
                _ => 4096,
            };
            if bits != want {
                return Err(CryptoError::Unsupported("RSA key of another size"));
            }
        }
        Ok(Self { kind, pair })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The public key as a DER SubjectPublicKeyInfo (what a certificate for this key carries).
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.pair)
    }

    /// A PKCS#10 request whose subject is `CN=<common_name>` and nothing else, as the EZCA IoT
    /// samples send it: SANs, EKUs and key usages travel in the JSON request instead.
    pub fn csr_pem(&self, common_name: &str) -> Result<String, CryptoError> {
        // With no SANs, no SAN extension is written at all.
        self.csr_pem_with_sans(common_name, &[])
    }

    /// A CSR for `CN=<common_name>` that also carries DNS SANs, as EZCA's renewal client builds
    /// it from the certificate being renewed.
    pub fn csr_pem_with_sans(
        &self,
        common_name: &str,
        dns_sans: &[String],
    ) -> Result<String, CryptoError> {
        let mut params = CertificateParams::new(dns_sans.to_vec()).map_err(CryptoError::Csr)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params
            .serialize_request(&self.pair)
            .and_then(|csr| csr.pem())
            .map_err(CryptoError::Csr)
    }

    pub fn is_rsa(&self) -> bool {
        matches!(
            self.kind,
            KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096
        )
    }

    /// Signs `message` with the key's own algorithm (RSASSA-PKCS1-v1_5 SHA-256 for RSA keys).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        rcgen::SigningKey::sign(&self.pair, message).map_err(CryptoError::Sign)
    }

    /// PKCS#8 PEM of the private key, for tools that read key files. Write it with
    /// [`write_private_key`], never to a log.
    pub fn private_key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.pair.serialize_der())
    }

    /// The key as rustls wants it for client authentication.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.pair.serialize_der().into())
    }
}

/// Modulus size of an RSA key, from its SubjectPublicKeyInfo length (DER of 2048/3072/4096-bit
/// keys is 294/422/550 bytes).
fn rsa_bits(pair: &KeyPair) -> usize {
    match rcgen::PublicKeyData::subject_public_key_info(pair).len() {
        0..=300 => 2048,
        301..=430 => 3072,
        _ => 4096,
    }
}

/// Writes a private key file readable by its owner only (0600).
pub fn write_private_key(path: &std::path::Path, key: &DeviceKey) -> std::io::Result<()> {
    write_secret_file(path, key.private_key_pem().as_bytes())
}

/// Writes a file readable by its owner only (0600): created that way rather than narrowed
/// afterwards, so the secret is never readable by others even for an instant; an existing file is
/// narrowed too.
pub fn write_secret_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)
}

/// All certificates in a PEM text, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CryptoError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CryptoError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CryptoError::NoCertificate);
    }
    Ok(certs)
}

/// PEM text for one DER certificate (64-column LF).
pub fn cert_to_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Upper-case hex SHA-1 of a DER certificate: the thumbprint EZCA and IoT Hub print.
pub fn sha1_thumbprint(der: &[u8]) -> String {
    hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The facts about a certificate that the device and the emulators act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject_cn: Option<String>,
    pub issuer_cn: Option<String>,
    pub dns_sans: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial_hex: String,
    /// The caIssuers URL of the Authority Information Access extension, where the issuer's
    /// certificate can be fetched (how the EZCA samples build their chain).
    pub ca_issuers_url: Option<String>,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<Self, CryptoError> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CryptoError::Certificate(e.to_string()))?;
        let first_cn = |name: &x509_parser::x509::X509Name| {
            name.iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
        };
        let mut dns_sans = Vec::new();
        let mut ca_issuers_url = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if let GeneralName::DNSName(d) = name {
                            dns_sans.push(d.to_string());
                        }
                    }
                }
                ParsedExtension::AuthorityInfoAccess(aia) => {
                    for desc in &aia.accessdescs {
                        if desc.access_method
                            == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_CA_ISSUERS
                            && let GeneralName::URI(uri) = &desc.access_location
                        {
                            ca_issuers_url = Some(uri.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            subject_cn: first_cn(cert.subject()),
            issuer_cn: first_cn(cert.issuer()),
            dns_sans,
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            serial_hex: cert.raw_serial_as_string().replace(':', ""),
            ca_issuers_url,
        })
    }

    /// The instant at which `fraction` of the lifetime has passed.
    pub fn point_in_life(&self, fraction: f64) -> OffsetDateTime {
        let life = self.not_after - self.not_before;
        self.not_before + life * fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_carries_only_the_common_name() {
        install_crypto_provider();
        let key = DeviceKey::generate(KeyKind::P256).unwrap();
        let pem = key.csr_pem("sim-000001").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        let cn = parsed.params.distinguished_name.get(&DnType::CommonName);
        assert!(matches!(cn, Some(rcgen::DnValue::Utf8String(s)) if s == "sim-000001"));
        assert!(parsed.params.subject_alt_names.is_empty());
        assert!(!format!("{key:?}").contains("BEGIN"));
    }

    #[test]
    fn thumbprint_is_upper_hex_sha1() {
        assert_eq!(
            sha1_thumbprint(b"abc"),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }
}
