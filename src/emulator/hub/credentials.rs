//! What the registry makes of a device's `authentication` when the device is created or updated
//! (reference §2, §4.2), as IoT Hub does:
//!
//! - `sas`: a key left out (null or empty) is generated, 32 random bytes in base64 (44
//!   characters, the length of the keys IoT Hub and the portal generate); a key given must be
//!   base64 of 16 to 64 bytes. Thumbprints are dropped.
//! - `selfSigned`: a primary thumbprint is required; each thumbprint is 40 (SHA-1) or 64
//!   (SHA-256) hex digits. Keys are dropped.
//! - `certificateAuthority` and `none`: neither keys nor thumbprints are kept (IoT Hub answers
//!   nulls for both, reference §4.2).
//!
//! The 16–64 byte rule and generating a single missing key are our reading of IoT Hub's behaviour
//! (the reference marks key generation as inferred); the error message names the rule broken.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::iothub::identity::{Authentication, AuthenticationType, SymmetricKey, X509Thumbprint};

/// Bytes of a generated key.
pub(super) const GENERATED_KEY_BYTES: usize = 32;
/// The decoded lengths IoT Hub takes for a symmetric key.
pub(super) const KEY_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// Brings `auth` to what the registry stores, or says which rule it breaks (for a 400).
pub(super) fn settle(auth: &mut Authentication) -> Result<(), String> {
    match auth.kind {
        AuthenticationType::Sas => {
            auth.x509_thumbprint = X509Thumbprint::default();
            let keys = &mut auth.symmetric_key;
            keys.primary_key = settle_key("primaryKey", keys.primary_key.take())?;
            keys.secondary_key = settle_key("secondaryKey", keys.secondary_key.take())?;
        }
        AuthenticationType::SelfSigned => {
            auth.symmetric_key = SymmetricKey::default();
            let prints = &mut auth.x509_thumbprint;
            let primary = nonempty(prints.primary_thumbprint.take())
                .ok_or("a selfSigned device needs a primaryThumbprint")?;
            prints.primary_thumbprint = Some(check_thumbprint("primaryThumbprint", primary)?);
            prints.secondary_thumbprint = nonempty(prints.secondary_thumbprint.take())
                .map(|t| check_thumbprint("secondaryThumbprint", t))
                .transpose()?;
        }
        AuthenticationType::CertificateAuthority | AuthenticationType::None => {
            auth.symmetric_key = SymmetricKey::default();
            auth.x509_thumbprint = X509Thumbprint::default();
        }
    }
    Ok(())
}

fn nonempty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// A key given is checked; one left out is generated.
fn settle_key(field: &str, key: Option<String>) -> Result<Option<String>, String> {
    let Some(key) = nonempty(key) else {
        return generate_key().map(Some);
    };
    let bytes = STANDARD.decode(key.trim()).map_err(|_| {
        format!("{field} is not valid base64: a symmetric key is base64 of 16 to 64 bytes")
    })?;
    if !KEY_BYTES.contains(&bytes.len()) {
        return Err(format!(
            "{field} decodes to {} bytes: a symmetric key must be between 16 and 64 bytes long",
            bytes.len()
        ));
    }
    Ok(Some(key.trim().to_string()))
}

/// A new key: [`GENERATED_KEY_BYTES`] from the system's secure random source, in base64.
pub(super) fn generate_key() -> Result<String, String> {
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no randomness for a new key".to_string())?;
    Ok(STANDARD.encode(bytes))
}

fn check_thumbprint(field: &str, value: String) -> Result<String, String> {
    let value = value.trim().to_string();
    let hex = value.chars().all(|c| c.is_ascii_hexdigit());
    if hex && matches!(value.len(), 40 | 64) {
        Ok(value)
    } else {
        Err(format!(
            "{field} must be a SHA-1 (40 hex digits) or SHA-256 (64 hex digits) thumbprint"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sas(primary: Option<&str>, secondary: Option<&str>) -> Authentication {
        Authentication {
            kind: AuthenticationType::Sas,
            symmetric_key: SymmetricKey {
                primary_key: primary.map(Into::into),
                secondary_key: secondary.map(Into::into),
            },
            x509_thumbprint: X509Thumbprint {
                primary_thumbprint: Some("ab".repeat(20)),
                secondary_thumbprint: None,
            },
        }
    }

    #[test]
    fn missing_keys_are_generated_as_iot_hub_does() {
        let mut auth = sas(None, Some(""));
        settle(&mut auth).unwrap();
        let primary = auth.symmetric_key.primary_key.clone().unwrap();
        let secondary = auth.symmetric_key.secondary_key.clone().unwrap();
        assert_eq!(primary.len(), 44);
        assert_eq!(STANDARD.decode(&primary).unwrap().len(), 32);
        assert_ne!(primary, secondary);
        assert_eq!(auth.x509_thumbprint, X509Thumbprint::default());
    }

    #[test]
    fn given_keys_must_be_base64_of_16_to_64_bytes() {
        let key = |n: usize| STANDARD.encode(vec![7u8; n]);
        for ok in [16, 32, 64] {
            let mut auth = sas(Some(&key(ok)), Some(&key(ok)));
            settle(&mut auth).unwrap();
            assert_eq!(auth.symmetric_key.primary_key, Some(key(ok)));
        }
        for bad in [15, 65] {
            let err = settle(&mut sas(Some(&key(bad)), None)).unwrap_err();
            assert!(err.contains("between 16 and 64 bytes"), "{err}");
            assert!(err.contains("primaryKey"), "{err}");
        }
        let err = settle(&mut sas(Some(&key(32)), Some("not base64!"))).unwrap_err();
        assert!(err.contains("secondaryKey is not valid base64"), "{err}");
    }

    #[test]
    fn certificate_types_drop_keys_and_check_thumbprints() {
        let mut auth = sas(Some(&STANDARD.encode([1u8; 32])), None);
        auth.kind = AuthenticationType::CertificateAuthority;
        settle(&mut auth).unwrap();
        assert_eq!(auth.symmetric_key, SymmetricKey::default());
        assert_eq!(auth.x509_thumbprint, X509Thumbprint::default());

        let mut auth = sas(Some(&STANDARD.encode([1u8; 32])), None);
        auth.kind = AuthenticationType::SelfSigned;
        settle(&mut auth).unwrap();
        assert_eq!(auth.symmetric_key, SymmetricKey::default());
        assert_eq!(
            auth.x509_thumbprint.primary_thumbprint,
            Some("ab".repeat(20))
        );

        auth.x509_thumbprint.primary_thumbprint = None;
        assert!(settle(&mut auth).unwrap_err().contains("primaryThumbprint"));
        auth.x509_thumbprint.primary_thumbprint = Some("xyz".into());
        assert!(settle(&mut auth).unwrap_err().contains("SHA-1"));
    }
}
