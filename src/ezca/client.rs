//! HTTP client for EZCA. One `Client` is shared by every device of a run: it holds one connection
//! pool and one token source.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::EzcaError;
use super::models::{
    AadObject, ApiResult, AvailableCa, CertificateCreateRequest, CertificateCreateRequestV2,
    CertificateCreatedResponse, DomainInformation, NewDomainRequest, RevokeRequest,
};
use super::retry::{RetryObserver, RetryPolicy, endpoint_of, with_retries};
use crate::sync::lock;

/// Supplies the Azure AD bearer token for management calls (see [`super::aad`]).
pub trait TokenSource: Send + Sync {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, EzcaError>> + Send + '_>>;
}

/// A token fixed for the whole run (from an environment variable, or minted by the emulator).
pub struct StaticToken(String);

impl StaticToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, EzcaError>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

pub struct Client {
    /// Base URL ending in `/`, e.g. `https://portal.ezca.io/`.
    base: String,
    pub(super) http: reqwest::Client,
    token: Arc<dyn TokenSource>,
    /// Issuer certificates fetched through AIA, by URL: a fleet shares a handful of CAs.
    issuers: Mutex<HashMap<String, CertificateDer<'static>>>,
    /// None until [`Client::set_retry`]: a run sets the scenario's policy (by default the
    /// official clients' 2/4/8 s).
    pub(super) retry: RetryPolicy,
    pub(super) on_retry: Option<RetryObserver>,
}

impl Client {
    /// `extra_roots` are PEM roots to trust besides the system's (the emulator's root in embedded
    /// runs); with `only_extra_roots`, nothing else is trusted.
    pub fn new(
        base_url: &str,
        token: Arc<dyn TokenSource>,
        extra_roots: &[CertificateDer<'static>],
        only_extra_roots: bool,
    ) -> Result<Self, EzcaError> {
        crate::crypto::install_crypto_provider();
        let mut base = base_url.trim().to_string();
        if !base.starts_with("https://") {
            return Err(EzcaError::Setup(format!("EZCA URL must be https: {base}")));
        }
        if !base.ends_with('/') {
            base.push('/');
        }
        let roots = extra_roots
            .iter()
            .map(|c| reqwest::Certificate::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EzcaError::Setup(e.to_string()))?;
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(64);
        let builder = if only_extra_roots {
            builder.tls_certs_only(roots)
        } else {
            builder.tls_certs_merge(roots)
        };
        let http = builder
            .build()
            .map_err(|e| EzcaError::Setup(e.to_string()))?;
        Ok(Self {
            base,
            http,
            token: token.clone(),
            issuers: Mutex::new(HashMap::new()),
            retry: RetryPolicy::none(),
            on_retry: None,
        })
    }

    /// Retries transient failures under `policy`, telling `observer` about each retry.
    pub fn set_retry(&mut self, policy: RetryPolicy, observer: Option<RetryObserver>) {
        self.retry = policy;
        self.on_retry = observer;
    }

    /// The caller as EZCA sees it: the `oid` (and `upn`) claims of the bearer token, as the IoT
    /// samples' `UserFromTokenAsync` reads them.
    pub async fn caller(&self) -> Result<AadObject, EzcaError> {
        let token = self.token.token().await?;
        let claims = token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .ok_or_else(|| EzcaError::Setup("the EZCA token is not a JWT".into()))?;
        let oid = claims["oid"]
            .as_str()
            .ok_or_else(|| EzcaError::Setup("the EZCA token has no oid claim".into()))?;
        Ok(AadObject::user(oid, claims["upn"].as_str()))
    }

    /// `GET api/CA/GetAvailableSSLCAs`: a bare JSON array.
    pub async fn get_available_ssl_cas(&self) -> Result<Vec<AvailableCa>, EzcaError> {
        let path = "api/CA/GetAvailableSSLCAs";
        self.send_json(path, self.http.get(self.url(path))).await
    }

    /// `POST api/CA/RegisterNewDomain` with the caller as sole owner and requester, as the samples
    /// do for each device id.
    pub async fn register_new_domain(
        &self,
        ca: &AvailableCa,
        domain: &str,
        owner: &AadObject,
    ) -> Result<(), EzcaError> {
        let body = NewDomainRequest {
            ca_id: ca.ca_id.clone(),
            template_id: ca.template_id.clone(),
            domain: Some(domain.to_string()),
            owners: vec![owner.clone()],
            requesters: vec![owner.clone()],
            requesters_only: Vec::new(),
            notification_emails: Vec::new(),
        };
        let result: ApiResult = self.post_json("api/CA/RegisterNewDomain", &body).await?;
        match result.success {
            true => Ok(()),
            false => Err(EzcaError::Refused(result.message)),
        }
    }

    /// `POST api/CA/RequestSSLCertificate`: the reply's `Message` is the leaf certificate PEM.
    pub async fn request_ssl_certificate(
        &self,
        request: &CertificateCreateRequest,
    ) -> Result<CertificateDer<'static>, EzcaError> {
        let result: ApiResult = self
            .post_json("api/CA/RequestSSLCertificate", request)
            .await?;
        if !result.success {
            return Err(EzcaError::Refused(result.message));
        }
        let mut certs = crate::crypto::certs_from_pem(&result.message)
            .map_err(|e| EzcaError::Malformed(format!("Message is not a certificate: {e}")))?;
        Ok(certs.swap_remove(0))
    }

    /// `POST api/CA/RequestFullSSLCertificate`: the V1 request, answered with the bare
    /// `CertificateCreatedResponse` (leaf, issuing CA, root).
    pub async fn request_full_ssl_certificate(
        &self,
        request: &CertificateCreateRequest,
    ) -> Result<CertificateCreatedResponse, EzcaError> {
        self.post_json("api/CA/RequestFullSSLCertificate", request)
            .await
    }

    /// `POST api/CA/RequestSSLCertificateV2`: typed SANs, answered with the bare
    /// `CertificateCreatedResponse`.
    pub async fn request_ssl_certificate_v2(
        &self,
        request: &CertificateCreateRequestV2,
    ) -> Result<CertificateCreatedResponse, EzcaError> {
        self.post_json("api/CA/RequestSSLCertificateV2", request)
            .await
    }

    /// `GET api/CA/GetMyDomains`: the domains the caller owns or may request for, as a JSON array
    /// inside `Message`.
    pub async fn get_my_domains(&self) -> Result<Vec<DomainInformation>, EzcaError> {
        let path = "api/CA/GetMyDomains";
        let result: ApiResult = self.send_json(path, self.http.get(self.url(path))).await?;
        if !result.success {
            return Err(EzcaError::Refused(result.message));
        }
        serde_json::from_str(&result.message)
            .map_err(|e| EzcaError::Malformed(format!("GetMyDomains Message: {e}")))
    }

    /// `POST api/CA/RevokeCertificateV2`: revoke by SHA-1 thumbprint (sent lower-case hex, as
    /// ezca-go does) with the Azure AD identity.
    pub async fn revoke_certificate_v2(
        &self,
        ca: &AvailableCa,
        thumbprint: &str,
    ) -> Result<(), EzcaError> {
        let body = RevokeRequest {
            ca_id: ca.ca_id.clone().unwrap_or_default(),
            template_id: ca.template_id.clone().unwrap_or_default(),
            thumbprint: thumbprint.to_ascii_lowercase(),
        };
        let result: ApiResult = self.post_json("api/CA/RevokeCertificateV2", &body).await?;
        match result.success {
            true => Ok(()),
            false => Err(EzcaError::Refused(result.message)),
        }
    }

    /// The leaf followed by its issuers, fetched through each certificate's AIA caIssuers URL
    /// (cached), stopping at a self-signed certificate. The root is not included.
    pub async fn chain_for(
        &self,
        leaf: CertificateDer<'static>,
    ) -> Result<Vec<CertificateDer<'static>>, EzcaError> {
        let mut chain = vec![leaf];
        for _ in 0..4 {
            let last = chain.last().expect("chain starts with the leaf");
            let info = crate::crypto::CertInfo::parse(last)
                .map_err(|e| EzcaError::Malformed(e.to_string()))?;
            let Some(url) = info.ca_issuers_url else {
                break;
            };
            let issuer = self.fetch_issuer(&url).await?;
            let issuer_info = crate::crypto::CertInfo::parse(&issuer)
                .map_err(|e| EzcaError::Malformed(e.to_string()))?;
            if issuer_info.subject_cn == issuer_info.issuer_cn {
                break; // a root: the verifier has it already
            }
            chain.push(issuer);
        }
        Ok(chain)
    }

    async fn fetch_issuer(&self, url: &str) -> Result<CertificateDer<'static>, EzcaError> {
        if let Some(c) = lock(&self.issuers).get(url) {
            return Ok(c.clone());
        }
        let resp = self.http.get(url).send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = retry_after_of(&resp);
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(EzcaError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
                retry_after,
            });
        }
        // caIssuers serves DER (`.cer`); accept PEM too.
        let cert = match crate::crypto::certs_from_pem(&String::from_utf8_lossy(&body)) {
            Ok(mut v) => v.swap_remove(0),
            Err(_) => CertificateDer::from(body.to_vec()),
        };
        lock(&self.issuers).insert(url.to_string(), cert.clone());
        Ok(cert)
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, EzcaError> {
        let req = self.http.post(self.url(path)).json(body);
        self.send_json(path, req).await
    }

    /// Sends `req` (again, under the retry policy) and parses the JSON reply.
    async fn send_json<T: DeserializeOwned>(
        &self,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, EzcaError> {
        with_retries(
            &self.retry,
            self.on_retry.as_ref(),
            endpoint_of(path),
            || {
                let req = req.try_clone();
                async move {
                    let req =
                        req.ok_or_else(|| EzcaError::Setup("request cannot be resent".into()))?;
                    self.send_once(req).await
                }
            },
        )
        .await
    }

    async fn send_once<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, EzcaError> {
        let token = self.token.token().await?;
        let resp = req.bearer_auth(token).send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = retry_after_of(&resp);
        let body = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(EzcaError::Status {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
                retry_after,
            });
        }
        serde_json::from_str(&body).map_err(|e| {
            let start: String = body.chars().take(120).collect();
            EzcaError::Malformed(format!("{e} in {start:?}"))
        })
    }
}

/// `Retry-After` in seconds (the form EZCA's and IoT Hub's throttles use).
pub(super) fn retry_after_of(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub(super) fn transport(e: reqwest::Error) -> EzcaError {
    if e.is_timeout() {
        EzcaError::Timeout
    } else {
        EzcaError::Transport(error_chain(&e))
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); show the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
