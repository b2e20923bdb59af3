//! Azure AD stand-in for the emulators: each mints HS256 JWTs for its own audience with the claims
//! the services read (`oid`, `upn`) and verifies signature, audience and expiry on every call.
//! The real services verify Microsoft-signed RS256 tokens; an emulator's own key keeps tests
//! hermetic while still refusing forged, foreign or expired tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The audience of tokens for EZCA (Azure management scope).
pub const EZCA_AUDIENCE: &str = "https://management.core.windows.net/";
/// The audience of tokens for IoT Hub's service APIs.
pub const IOTHUB_AUDIENCE: &str = "https://iothubs.azure.net";

pub struct TokenAuthority {
    key: hmac::Key,
    /// The key's bytes, kept so `fleetsim emulate --state` can restore the authority and the
    /// tokens it handed out stay valid across a restart. Secret: never printed.
    secret: [u8; 32],
    audience: &'static str,
}

/// The caller a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub oid: String,
    pub upn: Option<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenAuthority {
    pub fn new(audience: &'static str) -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret)?;
        Ok(Self::with_secret(audience, secret))
    }

    /// The authority whose key is `secret` (from [`TokenAuthority::secret`]).
    pub fn with_secret(audience: &'static str, secret: [u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            secret,
            audience,
        }
    }

    /// The signing key's bytes (secret).
    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    pub fn mint(&self, oid: &str, upn: &str, lifetime_secs: u64) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let iat = now();
        let claims = serde_json::json!({
            "aud": self.audience, "oid": oid, "upn": upn, "iat": iat, "nbf": iat, "exp": iat + lifetime_secs,
        });
        let payload = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let sig = B64.encode(hmac::sign(&self.key, signing_input.as_bytes()).as_ref());
        format!("{signing_input}.{sig}")
    }

    /// The caller named by `authorization` (`Bearer <jwt>`), or why not.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Caller, &'static str> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or("missing bearer token")?
            .trim();
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("bearer token is not a JWT");
        };
        let sig = B64
            .decode(s)
            .map_err(|_| "bearer token signature is not base64url")?;
        hmac::verify(&self.key, format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "bearer token signature is invalid")?;
        let claims: serde_json::Value = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("bearer token claims are not JSON")?;
        if claims["aud"].as_str() != Some(self.audience) {
            return Err("bearer token is for another audience");
        }
        let t = now();
        if claims["exp"].as_u64().is_none_or(|exp| exp < t) {
            return Err("bearer token expired");
        }
        if claims["nbf"].as_u64().is_some_and(|nbf| nbf > t + 300) {
            return Err("bearer token not yet valid");
        }
        let oid = claims["oid"].as_str().ok_or("bearer token has no oid")?;
        Ok(Caller {
            oid: oid.to_string(),
            upn: claims["upn"].as_str().map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_forgeries_do_not() {
        let a = TokenAuthority::new(EZCA_AUDIENCE).unwrap();
        let t = a.mint("oid-1", "fleet@example.com", 3600);
        let caller = a.verify(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(caller.oid, "oid-1");
        let other = TokenAuthority::new(EZCA_AUDIENCE)
            .unwrap()
            .mint("oid-1", "x", 3600);
        assert!(a.verify(Some(&format!("Bearer {other}"))).is_err());
        assert_eq!(a.verify(None), Err("missing bearer token"));
        // Same key, other audience: refused.
        let hub = TokenAuthority::with_secret(IOTHUB_AUDIENCE, a.secret());
        let for_hub = hub.mint("oid-1", "x", 3600);
        assert_eq!(
            a.verify(Some(&format!("Bearer {for_hub}"))),
            Err("bearer token is for another audience")
        );
        // Restored from its secret, the authority accepts what it minted before.
        let restored = TokenAuthority::with_secret(EZCA_AUDIENCE, a.secret());
        assert!(restored.verify(Some(&format!("Bearer {t}"))).is_ok());
    }
}
