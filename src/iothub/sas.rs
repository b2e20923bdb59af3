//! Shared access signatures, as IoT Hub defines them (reference §4.4):
//! `SharedAccessSignature sr={url-encoded resource}&sig={url-encoded base64 HMAC}&se={expiry}[&skn={policy}]`
//! where the HMAC-SHA256 key is the base64-decoded shared key and the signed string is
//! `{url-encoded resource}\n{expiry}`. Used by the registry client to sign and by the hub emulator
//! to verify.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::error::HubError;

/// The characters `encodeURIComponent` leaves alone, as the SDKs encode (upper-case escapes).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

pub fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

/// Appends `s`, URL-encoded as [`url_encode`] does, to `out` (no intermediate string).
pub fn push_url_encoded(out: &mut String, s: &str) {
    out.extend(utf8_percent_encode(s, URI_COMPONENT));
}

fn signature(encoded_resource: &str, expiry: &str, key_b64: &str) -> Result<String, HubError> {
    let key = STANDARD
        .decode(key_b64)
        .map_err(|_| HubError::ConnectionString("SharedAccessKey is not base64".into()))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&key, format!("{encoded_resource}\n{expiry}").as_bytes());
    Ok(STANDARD.encode(tag.as_ref()))
}

/// A SAS token for `resource` (e.g. `myhub.azure-devices.net` or `.../devices/d1`).
pub fn token(
    resource: &str,
    key_b64: &str,
    policy: Option<&str>,
    expiry: u64,
) -> Result<String, HubError> {
    let sr = url_encode(resource);
    let se = expiry.to_string();
    let sig = url_encode(&signature(&sr, &se, key_b64)?);
    let mut t = format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}");
    if let Some(p) = policy {
        t.push_str("&skn=");
        t.push_str(&url_encode(p));
    }
    Ok(t)
}

/// A SAS token as Event Hubs (and so an IoT hub's Event Hub-compatible endpoint) signs it:
/// the HMAC key is the shared key's text itself, not its base64-decoded bytes, and the resource
/// is usually `sb://{namespace host}/{entity}`.
pub fn service_bus_token(resource: &str, key: &str, policy: &str, expiry: u64) -> String {
    let sr = url_encode(resource);
    let se = expiry.to_string();
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    let tag = hmac::sign(&key, format!("{sr}\n{se}").as_bytes());
    let sig = url_encode(&STANDARD.encode(tag.as_ref()));
    format!(
        "SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={}",
        url_encode(policy)
    )
}

/// The fields of a received token, `sr` kept exactly as sent because the signature covers those
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    pub raw_sr: String,
    pub resource: String,
    pub sig: String,
    pub expiry: u64,
    pub policy: Option<String>,
}

pub fn parse(header: &str) -> Option<ParsedToken> {
    let rest = header.trim().strip_prefix("SharedAccessSignature ")?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in rest.split('&') {
        let (k, v) = pair.split_once('=')?;
        match k {
            "sr" => sr = Some(v.to_string()),
            "sig" => sig = Some(percent_decode_str(v).decode_utf8().ok()?.into_owned()),
            "se" => se = Some(v.to_string()),
            "skn" => skn = Some(percent_decode_str(v).decode_utf8().ok()?.into_owned()),
            _ => {}
        }
    }
    let raw_sr = sr?;
    Some(ParsedToken {
        resource: percent_decode_str(&raw_sr).decode_utf8().ok()?.into_owned(),
        raw_sr,
        sig: sig?,
        expiry: se?.parse().ok()?,
        policy: skn,
    })
}

/// Why a token was refused (the emulator reports these as 401 `IotHubUnauthorized`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasRefusal {
    #[error("not a SharedAccessSignature")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("signature does not match")]
    BadSignature,
    #[error("token is for another resource")]
    WrongResource,
}

/// Checks `token` against `key_b64` for a request on `resource_prefix`, at `now` (seconds).
/// Expired means past `se` + 5 minutes of clock skew, as the service allows.
pub fn verify(
    token: &ParsedToken,
    key_b64: &str,
    resource_prefix: &str,
    now: u64,
) -> Result<(), SasRefusal> {
    if token.expiry.saturating_add(300) < now {
        return Err(SasRefusal::Expired);
    }
    let expected = signature(&token.raw_sr, &token.expiry.to_string(), key_b64)
        .map_err(|_| SasRefusal::Malformed)?;
    // Constant-time comparison of the signatures.
    if aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), token.sig.as_bytes())
        .is_err()
    {
        return Err(SasRefusal::BadSignature);
    }
    // The token's resource must be a prefix of the request's by path segment; hostnames compare
    // case-insensitively.
    let have: Vec<&str> = token.resource.trim_end_matches('/').split('/').collect();
    let want: Vec<&str> = resource_prefix.trim_end_matches('/').split('/').collect();
    let prefix_ok = have.len() <= want.len()
        && have.iter().zip(&want).enumerate().all(|(i, (a, b))| {
            if i == 0 {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        });
    if !prefix_ok {
        return Err(SasRefusal::WrongResource);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn matches_the_reference_worked_example() {
        let t = token(
            "myhub.azure-devices.net/devices/device1",
            KEY,
            None,
            1456971697,
        )
        .unwrap();
        assert_eq!(
            t,
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdevice1&sig=eJpcmROW6N%2BBPekLfcdlfPjxTZq8tewbLShoRG%2BfwZg%3D&se=1456971697"
        );
        let svc = token(
            "myhub.azure-devices.net",
            KEY,
            Some("iothubowner"),
            1456971697,
        )
        .unwrap();
        let parsed = parse(&svc).unwrap();
        assert_eq!(parsed.sig, "ILnQV7py+22jTpx9fZzBYBgf7SyPy5wkP1hBmvrlaG0=");
        assert_eq!(parsed.policy.as_deref(), Some("iothubowner"));
    }

    /// Found by the `sas_token` fuzz target: `se` at u64::MAX overflowed the skew addition
    /// (a panic with debug assertions). It is a token that never expires, signed or not.
    #[test]
    fn an_expiry_at_the_end_of_time_is_checked_without_overflow() {
        let text = "SharedAccessSignature sr=hub%2Fdevices%2Fd1&sig=a&se=18446744073709551615";
        let t = parse(text).unwrap();
        assert_eq!(t.expiry, u64::MAX);
        assert_eq!(
            verify(&t, KEY, "hub/devices/d1", 1_000),
            Err(SasRefusal::BadSignature)
        );
    }

    #[test]
    fn verify_checks_signature_expiry_and_scope() {
        let t = parse(&token("myhub.azure-devices.net", KEY, Some("iothubowner"), 2_000).unwrap())
            .unwrap();
        assert_eq!(
            verify(&t, KEY, "myhub.azure-devices.net/devices/d1", 1_000),
            Ok(())
        );
        assert_eq!(
            verify(&t, KEY, "MyHub.azure-devices.net/devices/d1", 1_000),
            Ok(())
        );
        assert_eq!(
            verify(&t, KEY, "myhub.azure-devices.net/devices/d1", 2_301),
            Err(SasRefusal::Expired)
        );
        let other = "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert_eq!(
            verify(&t, other, "myhub.azure-devices.net", 1_000),
            Err(SasRefusal::BadSignature)
        );
        let dev =
            parse(&token("myhub.azure-devices.net/devices/d1", KEY, None, 2_000).unwrap()).unwrap();
        assert_eq!(
            verify(&dev, KEY, "myhub.azure-devices.net/devices/d10", 1_000),
            Err(SasRefusal::WrongResource)
        );
        // The signature covers sr exactly as encoded: lower-case escapes sign differently.
        let mut lower = dev.clone();
        lower.raw_sr = lower.raw_sr.replace("%2F", "%2f");
        assert_eq!(
            verify(&lower, KEY, "myhub.azure-devices.net/devices/d1", 1_000),
            Err(SasRefusal::BadSignature)
        );
    }
}
