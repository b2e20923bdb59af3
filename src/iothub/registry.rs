//! The registry REST client (`/devices/{id}?api-version=2021-04-12`, reference §4), authorised
//! by a service SAS token from a connection string or by an Azure AD bearer token.

use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;

use super::ConnectionString;
use super::error::HubError;
pub use super::identity::*;
pub use super::rest::RegistryAuth;
use super::rest::Rest;

/// Registry client. One per run, shared by all devices.
pub struct RegistryClient {
    rest: Rest,
    /// The run whose identities this client creates: each gets the run's twin tag.
    run_tag: Option<String>,
}

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
        let rest =
            Rest::new(base_url, auth, extra_roots, only_extra_roots).map_err(HubError::Setup)?;
        Ok(Self {
            rest,
            run_tag: None,
        })
    }

    /// Tags every identity this client creates with `run_id` (twin tag `fleetsim.run`).
    pub fn with_run_tag(mut self, run_id: Option<String>) -> Self {
        self.run_tag = run_id;
        self
    }

    pub fn run_tag(&self) -> Option<&str> {
        self.run_tag.as_deref()
    }

    /// Creates one CA-authenticated device carrying the run's tag in the same call (a bulk
    /// create of one: IoT Hub's single `PUT /devices/{id}` takes no tags, and tagging after it
    /// would leave an untagged identity, which cleanup never deletes, if fleetsim died in
    /// between). Answers `false` when the id already existed (then it is left untagged: it
    /// may not be this run's). Without a run tag it is a plain [`Self::create`].
    pub async fn create_tagged(&self, device_id: &str) -> Result<bool, HubError> {
        if self.run_tag.is_none() {
            return match self.create(&Device::certificate_authority(device_id)).await {
                Ok(_) => Ok(true),
                Err(HubError::Status { status: 409, .. }) => Ok(false),
                Err(e) => Err(e),
            };
        }
        let result = self.bulk_create(&[device_id.to_string()]).await?;
        match result.errors.first() {
            None => Ok(true),
            Some(e) if e.error_code == "DeviceAlreadyExists" => Ok(false),
            Some(e) => Err(HubError::Status {
                status: 400,
                code: e.error_code.clone(),
                body: e.error_status.clone(),
                retry_after: None,
            }),
        }
    }

    /// Deletes up to [`BULK_MAX`] devices in one call (`importMode: delete`, unconditional);
    /// per-device failures (e.g. `DeviceNotFound`) come back in the result.
    pub async fn bulk_delete(&self, device_ids: &[String]) -> Result<BulkResult, HubError> {
        let body: Vec<ExportImportDevice> = device_ids
            .iter()
            .map(|id| ExportImportDevice {
                id: id.clone(),
                e_tag: None,
                import_mode: ImportMode::Delete,
                status: DeviceStatus::Enabled,
                authentication: None,
                tags: None,
            })
            .collect();
        self.bulk(&body).await
    }

    fn device_url(&self, device_id: &str) -> String {
        self.rest
            .url(&format!("/devices/{}", super::sas::url_encode(device_id)))
    }

    /// Creates `device` (no `If-Match`, so an existing id answers 409 `DeviceAlreadyExists`).
    pub async fn create(&self, device: &Device) -> Result<Device, HubError> {
        let req = self
            .rest
            .http
            .put(self.device_url(&device.device_id))
            .json(device);
        self.send_json(req).await
    }

    /// Replaces `device`; `etag` is `None` for an unconditional update (`If-Match: "*"`).
    pub async fn update(&self, device: &Device, etag: Option<&str>) -> Result<Device, HubError> {
        let req = self
            .rest
            .http
            .put(self.device_url(&device.device_id))
            .header("If-Match", format!("\"{}\"", etag.unwrap_or("*")))
            .json(device);
        self.send_json(req).await
    }

    pub async fn get(&self, device_id: &str) -> Result<Device, HubError> {
        let req = self.rest.http.get(self.device_url(device_id));
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
            .rest
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
                tags: self.run_tag.as_deref().map(run_tags),
            })
            .collect();
        self.bulk(&body).await
    }

    /// Creates a symmetric-key device, with `primary_key` or with the keys the hub generates,
    /// carrying the run's tag in the same call when there is one (as [`Self::create_tagged`]),
    /// and answers the identity as the registry holds it (its keys included). An id that
    /// already existed is read instead (untagged: it may not be this run's).
    pub async fn create_sas_tagged(
        &self,
        device_id: &str,
        primary_key: Option<String>,
    ) -> Result<Device, HubError> {
        let authentication = Authentication {
            kind: AuthenticationType::Sas,
            symmetric_key: SymmetricKey {
                primary_key,
                secondary_key: None,
            },
            ..Default::default()
        };
        if self.run_tag.is_none() {
            let mut device = Device::certificate_authority(device_id);
            device.authentication = authentication;
            return match self.create(&device).await {
                Err(HubError::Status { status: 409, .. }) => self.get(device_id).await,
                other => other,
            };
        }
        let entry = ExportImportDevice {
            id: device_id.to_string(),
            e_tag: None,
            import_mode: ImportMode::Create,
            status: DeviceStatus::Enabled,
            authentication: Some(authentication),
            tags: self.run_tag.as_deref().map(run_tags),
        };
        let result = self.bulk(&[entry]).await?;
        match result.errors.first() {
            None => {}
            Some(e) if e.error_code == "DeviceAlreadyExists" => {}
            Some(e) => {
                return Err(HubError::Status {
                    status: 400,
                    code: e.error_code.clone(),
                    body: e.error_status.clone(),
                    retry_after: None,
                });
            }
        }
        // A bulk answer carries no identities: the generated keys are read back.
        self.get(device_id).await
    }

    async fn bulk(&self, body: &[ExportImportDevice]) -> Result<BulkResult, HubError> {
        let req = self.rest.http.post(self.rest.url("/devices")).json(body);
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
        let answer = self.rest.send(req).await?;
        Ok((answer.status, answer.body))
    }
}
