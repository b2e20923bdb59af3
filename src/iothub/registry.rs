//! The registry REST client (`/devices/{id}?api-version=2021-04-12`, reference §4), authorised
//! by a service SAS token from a connection string or by an Azure AD bearer token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;

use super::error::HubError;
pub use super::identity::*;
use super::{API_VERSION, ConnectionString};

/// How the client proves it may use the registry.
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

/// Registry client. One per run, shared by all devices.
pub struct RegistryClient {
    base: String,
    auth: RegistryAuth,
    http: reqwest::Client,
}

/// How long each SAS token the client signs is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

impl RegistryClient {
    /// `base_url` is `https://{HostName}` for Azure; the emulator's registry URL otherwise.
    pub fn new(
        base_url: &str,
        credentials: ConnectionString,
        extra_roots: &[CertificateDer<'static>],
        only_extra_roots: bool,
    ) -> Result<Self, HubError> {
        Self::with_auth(
            base_url,
            RegistryAuth::Sas(credentials),
            extra_roots,
            only_extra_roots,
        )
    }

    pub fn with_auth(
        base_url: &str,
        auth: RegistryAuth,
        extra_roots: &[CertificateDer<'static>],
        only_extra_roots: bool,
    ) -> Result<Self, HubError> {
        crate::crypto::install_crypto_provider();
        let roots = extra_roots
            .iter()
            .map(|c| reqwest::Certificate::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HubError::Setup(e.to_string()))?;
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
            http: builder
                .build()
                .map_err(|e| HubError::Setup(e.to_string()))?,
        })
    }

    fn authorization(&self) -> Result<String, HubError> {
        match &self.auth {
            RegistryAuth::Sas(c) => {
                let expiry = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    + TOKEN_LIFETIME;
                c.sas_token(expiry.as_secs())
            }
            RegistryAuth::Bearer(t) => Ok(format!("Bearer {t}")),
        }
    }

    fn device_url(&self, device_id: &str) -> String {
        format!(
            "{}/devices/{}?api-version={API_VERSION}",
            self.base,
            super::sas::url_encode(device_id)
        )
    }

    /// Creates `device` (no `If-Match`, so an existing id answers 409 `DeviceAlreadyExists`).
    pub async fn create(&self, device: &Device) -> Result<Device, HubError> {
        let req = self
            .http
            .put(self.device_url(&device.device_id))
            .json(device);
        self.send_json(req).await
    }

    /// Replaces `device`; `etag` is `None` for an unconditional update (`If-Match: "*"`).
    pub async fn update(&self, device: &Device, etag: Option<&str>) -> Result<Device, HubError> {
        let req = self
            .http
            .put(self.device_url(&device.device_id))
            .header("If-Match", format!("\"{}\"", etag.unwrap_or("*")))
            .json(device);
        self.send_json(req).await
    }

    pub async fn get(&self, device_id: &str) -> Result<Device, HubError> {
        let req = self.http.get(self.device_url(device_id));
        self.send_json(req).await
    }

    /// Enables or disables a device. Disabling drops its live connection.
    pub async fn set_status(
        &self,
        device_id: &str,
        status: DeviceStatus,
    ) -> Result<Device, HubError> {
        let mut device = self.get(device_id).await?;
        device.status = status;
        let etag = device.etag.clone();
        self.update(&device, Some(&etag)).await
    }

    /// Deletes a device; `etag` is `None` for an unconditional delete.
    pub async fn delete(&self, device_id: &str, etag: Option<&str>) -> Result<(), HubError> {
        let req = self
            .http
            .delete(self.device_url(device_id))
            .header("If-Match", format!("\"{}\"", etag.unwrap_or("*")));
        self.send(req).await.map(|_| ())
    }

    /// Creates up to [`BULK_MAX`] CA-authenticated devices in one call. A partial failure answers
    /// HTTP 400 with the per-device errors, which come back as `Ok` with `is_successful: false`.
    pub async fn bulk_create(&self, device_ids: &[String]) -> Result<BulkResult, HubError> {
        let body: Vec<ExportImportDevice> = device_ids
            .iter()
            .map(|id| ExportImportDevice {
                id: id.clone(),
                e_tag: None,
                import_mode: ImportMode::Create,
                status: DeviceStatus::Enabled,
                authentication: Some(Authentication {
                    kind: AuthenticationType::CertificateAuthority,
                    ..Default::default()
                }),
            })
            .collect();
        let req = self
            .http
            .post(format!("{}/devices?api-version={API_VERSION}", self.base))
            .json(&body);
        match self.send_json::<BulkResult>(req).await {
            Err(HubError::Status {
                status: 400, body, ..
            }) if body.contains("isSuccessful") => {
                serde_json::from_str(&body).map_err(|e| HubError::Status {
                    status: 400,
                    code: "MalformedReply".into(),
                    body: e.to_string(),
                    retry_after: None,
                })
            }
            other => other,
        }
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, HubError> {
        let (status, body) = self.send(req).await?;
        serde_json::from_str(&body).map_err(|e| HubError::Status {
            status,
            code: "MalformedReply".into(),
            body: e.to_string(),
            retry_after: None,
        })
    }

    /// Sends with authorisation; a non-2xx answer becomes [`HubError::Status`] carrying IoT Hub's
    /// error name and any `Retry-After`.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), HubError> {
        let resp = req
            .header("Authorization", self.authorization()?)
            .send()
            .await
            .map_err(|e| match e.is_timeout() {
                true => HubError::Timeout,
                false => HubError::Transport(e.to_string()),
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
        let body = resp
            .text()
            .await
            .map_err(|e| HubError::Transport(e.to_string()))?;
        if !status.is_success() {
            return Err(HubError::Status {
                status: status.as_u16(),
                code,
                body: body.chars().take(2000).collect(),
                retry_after,
            });
        }
        Ok((status.as_u16(), body))
    }
}
