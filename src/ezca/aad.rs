//! Azure AD access tokens for the real EZCA (scope `https://management.core.windows.net/.default`),
//! shared by every device of a run, cached, and refreshed five minutes before they expire.
//! Tokens are never logged: every type here prints `<redacted>` in `Debug`.
//!
//! Sources, as `azure_identity`'s credential chain offers them:
//! - a static token from the environment or a file (re-read when it changes, e.g. a mounted secret);
//! - a client secret (OAuth 2.0 client-credentials grant);
//! - workload identity (Kubernetes): the same grant with the federated token file as client
//!   assertion (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
//!   `AZURE_AUTHORITY_HOST`);
//! - managed identity (the instance metadata endpoint, or `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`);
//! - the Azure CLI (`az account get-access-token`).
//!
//! Hand-written rather than `azure_identity`: each flow is one HTTP call or one command, and the
//! crate would bring a second HTTP stack and async runtime glue into the build.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::client::TokenSource;
use super::error::EzcaError;

pub const EZCA_SCOPE: &str = "https://management.core.windows.net/.default";
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// Where tokens come from.
#[derive(Clone)]
pub enum Flow {
    /// Read from a file on every refresh (a token kept current by something else).
    File(PathBuf),
    ClientSecret {
        token_url: String,
        client_id: String,
        secret: String,
    },
    WorkloadIdentity {
        token_url: String,
        client_id: String,
        assertion_file: PathBuf,
    },
    ManagedIdentity {
        endpoint: String,
        header: Option<(String, String)>,
        client_id: Option<String>,
    },
    /// The Azure CLI program (`az` on PATH normally).
    AzureCli { program: PathBuf },
}

/// A cached token from a [`Flow`].
pub struct Provider {
    flow: Flow,
    scope: String,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<(String, SystemTime)>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.flow {
            Flow::File(p) => format!("File({})", p.display()),
            Flow::ClientSecret { client_id, .. } => {
                format!("ClientSecret({client_id}, <redacted>)")
            }
            Flow::WorkloadIdentity { client_id, .. } => format!("WorkloadIdentity({client_id})"),
            Flow::ManagedIdentity { .. } => "ManagedIdentity".into(),
            Flow::AzureCli { .. } => "AzureCli".into(),
        };
        write!(f, "Provider({kind}, token <redacted>)")
    }
}

/// The token endpoint of a tenant.
pub fn token_url(authority_host: &str, tenant: &str) -> String {
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        authority_host.trim_end_matches('/')
    )
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    /// Seconds from now (AAD v2); managed identity sends a string.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    /// Seconds since the epoch (managed identity).
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

fn number(v: &Option<serde_json::Value>) -> Option<u64> {
    match v.as_ref()? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn setup(msg: impl Into<String>) -> EzcaError {
    EzcaError::Setup(msg.into())
}

impl Provider {
    pub fn new(flow: Flow, scope: &str) -> Result<Self, EzcaError> {
        crate::crypto::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        Ok(Self {
            flow,
            scope: scope.into(),
            http,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// Workload identity from the variables the Azure workload-identity webhook sets.
    pub fn workload_identity_from_env(scope: &str) -> Result<Self, EzcaError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| setup(format!("workload identity: {name} is not set")))
        };
        let host = std::env::var("AZURE_AUTHORITY_HOST")
            .unwrap_or_else(|_| "https://login.microsoftonline.com".into());
        let flow = Flow::WorkloadIdentity {
            token_url: token_url(&host, &var("AZURE_TENANT_ID")?),
            client_id: var("AZURE_CLIENT_ID")?,
            assertion_file: var("AZURE_FEDERATED_TOKEN_FILE")?.into(),
        };
        Self::new(flow, scope)
    }

    async fn fetch(&self) -> Result<(String, SystemTime), EzcaError> {
        let now = SystemTime::now();
        let reply: TokenReply = match &self.flow {
            Flow::File(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| setup(format!("{}: {e}", path.display())))?;
                // Expiry from the JWT itself when it is one; otherwise re-read in five minutes.
                let exp = jwt_exp(token.trim()).unwrap_or_else(|| secs(now) + 600);
                return Ok((
                    token.trim().to_string(),
                    UNIX_EPOCH + Duration::from_secs(exp),
                ));
            }
            Flow::ClientSecret {
                token_url,
                client_id,
                secret,
            } => {
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("scope", &self.scope),
                ];
                self.post_form(token_url, &form).await?
            }
            Flow::WorkloadIdentity {
                token_url,
                client_id,
                assertion_file,
            } => {
                let assertion = std::fs::read_to_string(assertion_file)
                    .map_err(|e| setup(format!("{}: {e}", assertion_file.display())))?;
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.trim()),
                    ("scope", &self.scope),
                ];
                self.post_form(token_url, &form).await?
            }
            Flow::ManagedIdentity {
                endpoint,
                header,
                client_id,
            } => {
                self.managed_identity(endpoint, header.as_ref(), client_id.as_deref())
                    .await?
            }
            Flow::AzureCli { program } => return self.azure_cli(program, now).await,
        };
        let expires = match (number(&reply.expires_on), number(&reply.expires_in)) {
            (Some(on), _) => UNIX_EPOCH + Duration::from_secs(on),
            (None, Some(within)) => now + Duration::from_secs(within),
            (None, None) => now + Duration::from_secs(3600),
        };
        Ok((reply.access_token, expires))
    }

    /// The instance metadata (or App Service) identity endpoint.
    async fn managed_identity(
        &self,
        endpoint: &str,
        header: Option<&(String, String)>,
        client_id: Option<&str>,
    ) -> Result<TokenReply, EzcaError> {
        let resource = self.scope.trim_end_matches("/.default");
        let mut req = self
            .http
            .get(endpoint)
            .query(&[("api-version", "2019-08-01"), ("resource", resource)]);
        if let Some(id) = client_id {
            req = req.query(&[("client_id", id)]);
        }
        req = match header {
            Some((name, value)) => req.header(name, value),
            None => req.header("Metadata", "true"),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| setup(format!("managed identity: {e}")))?;
        reply_json(resp, "managed identity").await
    }

    /// `az account get-access-token`, as the signed-in user of the Azure CLI.
    async fn azure_cli(
        &self,
        program: &std::path::Path,
        now: SystemTime,
    ) -> Result<(String, SystemTime), EzcaError> {
        let out = tokio::process::Command::new(program)
            .args([
                "account",
                "get-access-token",
                "--scope",
                &self.scope,
                "--output",
                "json",
            ])
            .output()
            .await
            .map_err(|e| setup(format!("cannot run the Azure CLI (az): {e}")))?;
        if !out.status.success() {
            return Err(setup(format!(
                "az account get-access-token failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Cli {
            access_token: String,
            #[serde(default)]
            expires_on: Option<serde_json::Value>,
        }
        let cli: Cli =
            serde_json::from_slice(&out.stdout).map_err(|e| setup(format!("az output: {e}")))?;
        // `expires_on` is epoch seconds in newer CLIs; older ones only give a local date string,
        // for which we assume the usual hour.
        let exp = number(&cli.expires_on).unwrap_or(secs(now) + 3600);
        Ok((cli.access_token, UNIX_EPOCH + Duration::from_secs(exp)))
    }

    async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<TokenReply, EzcaError> {
        let resp = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .map_err(|e| setup(format!("token endpoint: {e}")))?;
        reply_json(resp, "token endpoint").await
    }

    /// The current token, fetched when absent or within five minutes of expiry. One fetch at a
    /// time: devices asking meanwhile wait for it instead of stampeding the endpoint.
    pub async fn current(&self) -> Result<String, EzcaError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, expires)) = cache.as_ref()
            && SystemTime::now() + REFRESH_BEFORE < *expires
        {
            return Ok(token.clone());
        }
        let (token, expires) = self.fetch().await?;
        *cache = Some((token.clone(), expires));
        Ok(token)
    }
}

async fn reply_json(resp: reqwest::Response, what: &str) -> Result<TokenReply, EzcaError> {
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| setup(format!("{what}: {e}")))?;
    if !status.is_success() {
        // AAD's error bodies name the problem (`error`, `error_description`) and hold no secret.
        return Err(setup(format!(
            "{what} answered HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        )));
    }
    serde_json::from_str(&text).map_err(|e| setup(format!("{what} reply: {e}")))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn jwt_exp(token: &str) -> Option<u64> {
    use base64::Engine;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_u64()
}

impl TokenSource for Provider {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, EzcaError>> + Send + '_>> {
        Box::pin(self.current())
    }
}
