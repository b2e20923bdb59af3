//! The calls a device makes with its own certificate (reference §5.5, §5.6): each is authorised
//! by an RS256 certificate-JWT signed with the certificate's key, so they need RSA keys.

use rustls_pki_types::CertificateDer;

use super::client::{Client, retry_after_of, transport};
use super::error::EzcaError;
use super::models::{
    ApiResult, CertRenewRequest, CertificateAuthenticationPayload, CertificateCreatedResponse,
};
use super::retry::{endpoint_of, with_retries};
use crate::crypto::{DeviceKey, cert_to_pem, certs_from_pem, jwt};

/// A reply body: its status and text.
struct Reply {
    status: u16,
    text: String,
}

impl Client {
    /// A call authorised by a certificate-JWT, retried under the client's policy with a new
    /// JWT (and `jti`) each time.
    async fn with_certificate(
        &self,
        method: reqwest::Method,
        path: &str,
        current: &CertificateDer<'static>,
        key: &DeviceKey,
        body: Option<serde_json::Value>,
    ) -> Result<Reply, EzcaError> {
        let (policy, observer) = (&self.retry, self.on_retry.as_ref());
        with_retries(policy, observer, endpoint_of(path), || {
            self.with_certificate_once(method.clone(), path, current, key, body.clone())
        })
        .await
    }

    async fn with_certificate_once(
        &self,
        method: reqwest::Method,
        path: &str,
        current: &CertificateDer<'static>,
        key: &DeviceKey,
        body: Option<serde_json::Value>,
    ) -> Result<Reply, EzcaError> {
        let token = jwt::sign(current, key).map_err(|e| EzcaError::Setup(e.to_string()))?;
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let retry_after = retry_after_of(&resp);
        let text = resp.text().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            return Err(EzcaError::Status {
                status,
                body: text.chars().take(300).collect(),
                retry_after,
            });
        }
        Ok(Reply { status, text })
    }

    fn renewal_body(
        current: &CertificateDer<'static>,
        csr_pem: String,
        validity_in_days: i64,
    ) -> serde_json::Value {
        serde_json::to_value(CertificateAuthenticationPayload {
            certificate: cert_to_pem(current),
            payload: CertRenewRequest {
                csr: csr_pem,
                validity_in_days,
            },
        })
        .unwrap_or_default()
    }

    /// `POST api/Certificates/RenewCertificateV2` (EZCAClient 1.0.9): the reply body is the new
    /// certificate's PEM.
    pub async fn renew_certificate_v2(
        &self,
        current: &CertificateDer<'static>,
        current_key: &DeviceKey,
        csr_pem: String,
        validity_in_days: i64,
    ) -> Result<CertificateDer<'static>, EzcaError> {
        let body = Self::renewal_body(current, csr_pem, validity_in_days);
        let reply = self
            .with_certificate(
                reqwest::Method::POST,
                "api/Certificates/RenewCertificateV2",
                current,
                current_key,
                Some(body),
            )
            .await?;
        first_certificate(&reply.text, "RenewCertificateV2 body")
    }

    /// `POST api/Certificates/RenewCertificateV3` (ezca-go): a `CertificateCreatedResponse`,
    /// bare or double-encoded as a JSON string.
    pub async fn renew_certificate_v3(
        &self,
        current: &CertificateDer<'static>,
        current_key: &DeviceKey,
        csr_pem: String,
        validity_in_days: i64,
    ) -> Result<CertificateCreatedResponse, EzcaError> {
        let body = Self::renewal_body(current, csr_pem, validity_in_days);
        let reply = self
            .with_certificate(
                reqwest::Method::POST,
                "api/Certificates/RenewCertificateV3",
                current,
                current_key,
                Some(body),
            )
            .await?;
        parse_maybe_string_wrapped(&reply.text)
    }

    /// `POST api/Certificates/RenewCertificate` (legacy, EZCAClient ≤ 1.0.8): the certificate is
    /// named by the token's `x5t`; `Message` is the new PEM.
    pub async fn renew_certificate_legacy(
        &self,
        current: &CertificateDer<'static>,
        current_key: &DeviceKey,
        csr_pem: String,
        validity_in_days: i64,
    ) -> Result<CertificateDer<'static>, EzcaError> {
        let body = serde_json::to_value(CertRenewRequest {
            csr: csr_pem,
            validity_in_days,
        })
        .unwrap_or_default();
        let reply = self
            .with_certificate(
                reqwest::Method::POST,
                "api/Certificates/RenewCertificate",
                current,
                current_key,
                Some(body),
            )
            .await?;
        let result = api_result(&reply)?;
        first_certificate(&result.message, "RenewCertificate Message")
    }

    /// `GET api/Certificates/RevokeCertificate`: the device revokes its own certificate.
    pub async fn revoke_certificate(
        &self,
        current: &CertificateDer<'static>,
        current_key: &DeviceKey,
    ) -> Result<(), EzcaError> {
        let reply = self
            .with_certificate(
                reqwest::Method::GET,
                "api/Certificates/RevokeCertificate",
                current,
                current_key,
                None,
            )
            .await?;
        api_result(&reply).map(|_| ())
    }
}

fn api_result(reply: &Reply) -> Result<ApiResult, EzcaError> {
    let result: ApiResult = serde_json::from_str(&reply.text).map_err(|e| {
        EzcaError::Malformed(format!(
            "HTTP {} body is not an APIResult: {e}",
            reply.status
        ))
    })?;
    match result.success {
        true => Ok(result),
        false => Err(EzcaError::Refused(result.message)),
    }
}

fn first_certificate(pem: &str, what: &str) -> Result<CertificateDer<'static>, EzcaError> {
    let mut certs = certs_from_pem(pem)
        .map_err(|e| EzcaError::Malformed(format!("{what} is not a certificate: {e}")))?;
    Ok(certs.swap_remove(0))
}

/// ezca-go: "some EZCA endpoints return the body double-encoded".
pub fn parse_maybe_string_wrapped<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, EzcaError> {
    if let Ok(v) = serde_json::from_str::<T>(text) {
        return Ok(v);
    }
    let inner: String = serde_json::from_str(text)
        .map_err(|e| EzcaError::Malformed(format!("neither an object nor a JSON string: {e}")))?;
    serde_json::from_str(&inner)
        .map_err(|e| EzcaError::Malformed(format!("string-wrapped body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_string_wrapped_bodies_both_parse() {
        let bare = r#"{"CertificatePEM":"a","IssuingCACertificate":"b","RootCertificate":""}"#;
        let wrapped = serde_json::to_string(bare).unwrap();
        let a: CertificateCreatedResponse = parse_maybe_string_wrapped(bare).unwrap();
        let b: CertificateCreatedResponse = parse_maybe_string_wrapped(&wrapped).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.issuing_ca_certificate, "b");
        assert!(parse_maybe_string_wrapped::<CertificateCreatedResponse>("Error: nope").is_err());
    }
}
