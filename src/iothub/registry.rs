//! The registry REST client (`PUT/GET /devices/{id}?api-version=2021-04-12`) and the device JSON
//! the hub and its emulator exchange (reference §4).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{API_VERSION, ConnectionString, HubError};

/// A device identity as the registry returns it (camelCase on the wire).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    #[serde(default)]
    pub generation_id: String,
    #[serde(default)]
    pub etag: String,
    #[serde(default = "enabled")]
    pub status: DeviceStatus,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default = "never")]
    pub status_updated_time: String,
    #[serde(default = "disconnected")]
    pub connection_state: String,
    #[serde(default = "never")]
    pub connection_state_updated_time: String,
    #[serde(default = "never")]
    pub last_activity_time: String,
    #[serde(default)]
    pub cloud_to_device_message_count: u64,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub device_scope: Option<String>,
    #[serde(default)]
    pub parent_scopes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    #[default]
    Enabled,
    Disabled,
}

fn enabled() -> DeviceStatus {
    DeviceStatus::Enabled
}
fn never() -> String {
    "0001-01-01T00:00:00".into()
}
fn disconnected() -> String {
    "Disconnected".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    #[serde(rename = "type", default)]
    pub kind: AuthenticationType,
    #[serde(default)]
    pub symmetric_key: SymmetricKey,
    #[serde(default)]
    pub x509_thumbprint: X509Thumbprint,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AuthenticationType {
    #[default]
    Sas,
    SelfSigned,
    CertificateAuthority,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub iot_edge: bool,
}

impl Device {
    /// A new CA-signed device, as `az iot hub device-identity create --am x509_ca` makes it.
    pub fn certificate_authority(device_id: &str) -> Self {
        Self {
            device_id: device_id.into(),
            generation_id: String::new(),
            etag: String::new(),
            status: DeviceStatus::Enabled,
            status_reason: None,
            status_updated_time: never(),
            connection_state: disconnected(),
            connection_state_updated_time: never(),
            last_activity_time: never(),
            cloud_to_device_message_count: 0,
            authentication: Authentication {
                kind: AuthenticationType::CertificateAuthority,
                ..Default::default()
            },
            capabilities: Capabilities::default(),
            device_scope: None,
            parent_scopes: Vec::new(),
        }
    }
}

/// Registry client authorised by a service SAS token from a connection string.
pub struct RegistryClient {
    base: String,
    credentials: ConnectionString,
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
            credentials,
            http: builder
                .build()
                .map_err(|e| HubError::Setup(e.to_string()))?,
        })
    }

    fn authorization(&self) -> Result<String, HubError> {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + TOKEN_LIFETIME;
        self.credentials.sas_token(expiry.as_secs())
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
        self.send(req).await
    }

    pub async fn get(&self, device_id: &str) -> Result<Device, HubError> {
        let req = self.http.get(self.device_url(device_id));
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Device, HubError> {
        let resp = req
            .header("Authorization", self.authorization()?)
            .send()
            .await
            .map_err(|e| match e.is_timeout() {
                true => HubError::Timeout,
                false => HubError::Transport(e.to_string()),
            })?;
        let status = resp.status();
        let code = resp
            .headers()
            .get("iothub-errorcode")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .text()
            .await
            .map_err(|e| HubError::Transport(e.to_string()))?;
        if !status.is_success() {
            return Err(HubError::Status {
                status: status.as_u16(),
                code,
                body: body.chars().take(300).collect(),
            });
        }
        serde_json::from_str(&body).map_err(|e| HubError::Status {
            status: status.as_u16(),
            code: "MalformedReply".into(),
            body: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_json_uses_wire_names() {
        let v = serde_json::to_value(Device::certificate_authority("d1")).unwrap();
        assert_eq!(v["deviceId"], "d1");
        assert_eq!(v["status"], "enabled");
        assert_eq!(v["authentication"]["type"], "certificateAuthority");
        assert!(v["authentication"]["x509Thumbprint"]["primaryThumbprint"].is_null());
        assert_eq!(v["capabilities"]["iotEdge"], false);
    }
}
