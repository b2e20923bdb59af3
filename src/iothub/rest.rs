//! The HTTPS plumbing IoT Hub's REST clients share ([`super::registry`], [`super::service`]):
//! one reqwest client with the hub's trust roots, the `Authorization` header (a fresh service
//! SAS token per request, or an Azure AD bearer token), and the answer read into status, body
//! and the headers the callers need (`ETag`, `x-ms-continuation`, `iothub-errorcode`,
//! `Retry-After`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;

use super::error::HubError;
use super::{API_VERSION, ConnectionString};

/// How a client proves it may use the hub's REST API.
#[derive(Clone)]
pub enum RegistryAuth {
    /// Service SAS tokens signed with the connection string's key, one per request.
    Sas(ConnectionString),
    /// An Azure AD access token for `https://iothubs.azure.net/.default`.
    Bearer(String),
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Sas(c) => write!(f, "Sas({c:?})"),
            RegistryAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// How long each SAS token a client signs is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// What went wrong below the level of IoT Hub's answers; each client turns it into its own error.
#[derive(Debug)]
pub(super) enum RestFailure {
    /// Connecting or talking to the hub failed.
    Transport(String),
    /// No answer within the request's timeout.
    Timeout,
    /// The credentials could not make a token.
    Credentials(String),
    /// The hub answered with a status that is not 2xx.
    Refused(Refusal),
}

/// The registry and management clients report every failure as a [`HubError`].
impl From<RestFailure> for HubError {
    fn from(failure: RestFailure) -> Self {
        match failure {
            RestFailure::Transport(e) => HubError::Transport(e),
            RestFailure::Timeout => HubError::Timeout,
            RestFailure::Credentials(e) => HubError::ConnectionString(e),
            RestFailure::Refused(r) => HubError::Status {
                status: r.status,
                code: r.code,
                body: r.body,
                retry_after: r.retry_after,
            },
        }
    }
}

/// A non-2xx answer, with what IoT Hub says about it.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub status: u16,
    /// The `iothub-errorcode` header (e.g. `DeviceNotOnline`), empty if absent.
    pub code: String,
    /// The body, cut to 2,000 characters.
    pub body: String,
    pub retry_after: Option<Duration>,
}

/// A 2xx answer.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    pub body: String,
    /// The `ETag` header, quotes removed.
    pub etag: Option<String>,
    /// The `x-ms-continuation` header: the next page of a query.
    pub continuation: Option<String>,
}

/// One hub's REST endpoint with its credentials.
pub(super) struct Rest {
    base: String,
    auth: RegistryAuth,
    pub http: reqwest::Client,
}

impl Rest {
    /// `base_url` is `https://{HostName}` for Azure; an emulator's URL otherwise. With
    /// `only_extra_roots` the system's roots are not trusted.
    pub fn new(
        base_url: &str,
        auth: RegistryAuth,
        extra_roots: &[CertificateDer<'static>],
        only_extra_roots: bool,
    ) -> Result<Self, String> {
        crate::crypto::install_crypto_provider();
        let roots = extra_roots
            .iter()
            .map(|c| reqwest::Certificate::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(15));
        let builder = if only_extra_roots {
            builder.tls_certs_only(roots)
        } else {
            builder.tls_certs_merge(roots)
        };
        Ok(Self {
            base: base_url.trim_end_matches('/').to_string(),
            auth,
            http: builder.build().map_err(|e| e.to_string())?,
        })
    }

    /// `{base}{path}?api-version=…`; `path` starts with `/` and is already URL-encoded.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API_VERSION}", self.base)
    }

    fn authorization(&self) -> Result<String, RestFailure> {
        match &self.auth {
            RegistryAuth::Sas(c) => {
                let expiry = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    + TOKEN_LIFETIME;
                c.sas_token(expiry.as_secs())
                    .map_err(|e| RestFailure::Credentials(e.to_string()))
            }
            RegistryAuth::Bearer(t) => Ok(format!("Bearer {t}")),
        }
    }

    /// Sends `req` with authorisation and reads the answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Answer, RestFailure> {
        let resp = req
            .header("Authorization", self.authorization()?)
            .send()
            .await
            .map_err(|e| match e.is_timeout() {
                true => RestFailure::Timeout,
                false => RestFailure::Transport(e.to_string()),
            })?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let code = header("iothub-errorcode").unwrap_or_default();
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let etag = header("etag").map(|e| e.trim_matches('"').to_string());
        let continuation = header("x-ms-continuation").filter(|c| !c.is_empty());
        let body = resp.text().await.map_err(|e| match e.is_timeout() {
            true => RestFailure::Timeout,
            false => RestFailure::Transport(e.to_string()),
        })?;
        if !status.is_success() {
            return Err(RestFailure::Refused(Refusal {
                status: status.as_u16(),
                code,
                body: body.chars().take(2000).collect(),
                retry_after,
            }));
        }
        Ok(Answer {
            status: status.as_u16(),
            body,
            etag,
            continuation,
        })
    }
}
