//! EZCA's certificate-authentication JWT (reference §6): a device proves possession of its current
//! certificate's key by signing a short RS256 token whose header names the certificate by `x5t`,
//! the upper-case hex SHA-1 of its DER (not RFC 7515's base64url), with claims `aud`, `jti`,
//! `nbf` and `exp` (30 minutes). RSA keys only, as on the real service.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use super::{CryptoError, DeviceKey, sha1_thumbprint};

/// The audience EZCA's clients put in the token.
pub const AUDIENCE: &str = "https://ezca.io";
/// The other audience the service accepts (EZCA's agent).
pub const AGENT_AUDIENCE: &str = "https://agent.keytos.io";
/// Lifetime of a token, as the official clients set it.
pub const LIFETIME_SECS: u64 = 30 * 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub x5t: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    #[serde(default)]
    pub aud: Option<String>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub exp: Option<u64>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for the certificate `cert_der`, signed with its key.
pub fn sign(cert_der: &[u8], key: &DeviceKey) -> Result<String, CryptoError> {
    if !key.is_rsa() {
        return Err(CryptoError::Unsupported(
            "certificate-based EZCA authentication needs an RSA key (RS256)",
        ));
    }
    let t = now();
    let claims = Claims {
        aud: Some(AUDIENCE.into()),
        jti: Some(uuid::Uuid::new_v4().to_string()),
        nbf: Some(t),
        exp: Some(t + LIFETIME_SECS),
    };
    sign_claims(&sha1_thumbprint(cert_der), &claims, key)
}

/// A token with the given `x5t` and claims, signed RS256 with `key`. [`sign`] is what clients
/// use; this is for tests and tools that need other claims (expired, another audience, ...).
pub fn sign_claims(x5t: &str, claims: &Claims, key: &DeviceKey) -> Result<String, CryptoError> {
    let header = Header {
        alg: "RS256".into(),
        typ: Some("JWT".into()),
        x5t: Some(x5t.to_string()),
    };
    let input = format!("{}.{}", b64_json(&header), b64_json(claims));
    let signature = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", B64.encode(signature)))
}

fn b64_json<T: Serialize>(value: &T) -> String {
    B64.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// A token taken apart, not yet verified.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub header: Header,
    pub claims: Claims,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWT.
pub fn parse(token: &str) -> Option<Parsed> {
    let mut parts = token.trim().split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Parsed {
        header: serde_json::from_slice(&B64.decode(h).ok()?).ok()?,
        claims: serde_json::from_slice(&B64.decode(c).ok()?).ok()?,
        signing_input: format!("{h}.{c}"),
        signature: B64.decode(s).ok()?,
    })
}

/// Verifies an RS256 signature with the RSA public key of the certificate `cert_der`.
pub fn verify_signature(parsed: &Parsed, cert_der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return false;
    };
    verify_signature_spki(parsed, cert.public_key().raw)
}

/// Verifies an RS256 signature with the RSA key of a DER SubjectPublicKeyInfo (what a CA keeps
/// of the certificates it issued).
pub fn verify_signature_spki(parsed: &Parsed, spki_der: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok((_, spki)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der) else {
        return false;
    };
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return false;
    }
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        spki.subject_public_key.data.as_ref(),
    );
    key.verify(parsed.signing_input.as_bytes(), &parsed.signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyKind;

    fn self_signed(key: &DeviceKey) -> Vec<u8> {
        let pair = rcgen::KeyPair::from_pem(&key.private_key_pem()).unwrap();
        rcgen::CertificateParams::new(vec!["d".to_string()])
            .unwrap()
            .self_signed(&pair)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn rs256_token_has_the_reference_shape_and_verifies() {
        crate::crypto::install_crypto_provider();
        let key = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
        let cert = self_signed(&key);
        let token = sign(&cert, &key).unwrap();
        let p = parse(&token).unwrap();
        assert_eq!(p.header.alg, "RS256");
        assert_eq!(p.header.typ.as_deref(), Some("JWT"));
        let x5t = p.header.x5t.clone().unwrap();
        assert_eq!(x5t.len(), 40);
        assert!(
            x5t.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(p.claims.aud.as_deref(), Some(AUDIENCE));
        assert_eq!(p.claims.exp.unwrap() - p.claims.nbf.unwrap(), LIFETIME_SECS);
        assert!(uuid::Uuid::parse_str(p.claims.jti.as_deref().unwrap()).is_ok());
        assert!(verify_signature(&p, &cert));

        // Another key's certificate does not verify it; nor does a tampered token.
        let other = DeviceKey::generate(KeyKind::Rsa2048).unwrap();
        assert!(!verify_signature(&p, &self_signed(&other)));
        let mut tampered = p.clone();
        tampered.signing_input.push('x');
        assert!(!verify_signature(&tampered, &cert));

        let ec = DeviceKey::generate(KeyKind::P256).unwrap();
        assert!(sign(&self_signed(&ec), &ec).is_err(), "RS256 needs RSA");
    }
}
