//! IoT Hub's CA proof of possession from the holder's side: a short-lived certificate whose
//! subject CN is the hub's verification code, signed by the CA's private key. Only someone
//! holding the key can make it, which is what the hub checks before it trusts the CA.

use rcgen::{CertificateParams, DnType, Issuer, KeyPair};

use super::CryptoError;

/// A verification certificate (PEM) for `code`, signed by the CA `ca_cert_pem` with its key
/// `ca_key_pem` (PKCS#8 PEM), valid from an hour ago for a day.
pub fn verification_certificate(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    code: &str,
) -> Result<String, CryptoError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| CryptoError::Pem(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
        .map_err(|e| CryptoError::Certificate(e.to_string()))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CryptoError::Sign)?;
    params.distinguished_name.push(DnType::CommonName, code);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CryptoError::KeyGen)?;
    let cert = params.signed_by(&key, &issuer).map_err(CryptoError::Sign)?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_code_and_chains_to_the_ca() {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Root");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let pem = verification_certificate(&ca.pem(), &ca_key.serialize_pem(), "ABC123").unwrap();
        let der = crate::crypto::certs_from_pem(&pem).unwrap().remove(0);
        let info = crate::crypto::CertInfo::parse(&der).unwrap();
        assert_eq!(info.subject_cn.as_deref(), Some("ABC123"));
        assert_eq!(info.issuer_cn.as_deref(), Some("Root"));
        let bad = verification_certificate(&ca.pem(), "not a key", "ABC123");
        assert!(matches!(bad, Err(CryptoError::Pem(_))), "{bad:?}");
    }
}
