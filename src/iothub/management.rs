//! The hub's Azure Resource Manager resource (`Microsoft.Devices/IotHubs/{name}`, api-version
//! [`MANAGEMENT_API_VERSION`]): reading its SKU and units, and uploading a CA certificate with
//! IoT Hub's proof of possession (upload → verification code → a certificate for the code
//! signed by the CA → verified). Authorised by an Azure AD token for
//! `https://management.azure.com/.default`, or (against `fleetsim emulate`) the hub's service
//! SAS, which the emulator also takes there.

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::error::HubError;
use super::quotas::Sku;
pub use super::rest::RegistryAuth as ManagementAuth;
use super::rest::Rest;

pub const MANAGEMENT_API_VERSION: &str = "2023-06-30";

/// Client of one hub's ARM resource.
pub struct ManagementClient {
    rest: Rest,
    /// The resource URL (`https://management.azure.com/subscriptions/…/IotHubs/{name}`).
    resource: String,
}

/// The hub's tier as ARM states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSku {
    pub sku: Sku,
    pub units: u32,
}

/// An uploaded CA certificate (`CertificateDescription`).
#[derive(Debug, Clone, Deserialize)]
pub struct CaCertificate {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub etag: String,
    pub properties: CaProperties,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaProperties {
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub thumbprint: Option<String>,
    #[serde(default)]
    pub is_verified: bool,
    #[serde(default)]
    pub verification_code: Option<String>,
}

#[derive(Deserialize)]
struct Resource {
    sku: Option<ResourceSku>,
}

#[derive(Deserialize)]
struct ResourceSku {
    name: String,
    #[serde(default)]
    capacity: Option<u32>,
}

fn malformed(status: u16, why: String) -> HubError {
    HubError::Status {
        status,
        code: "MalformedReply".into(),
        body: why,
        retry_after: None,
    }
}

impl ManagementClient {
    pub fn new(
        resource_url: &str,
        auth: ManagementAuth,
        extra_roots: &[CertificateDer<'static>],
        only_extra_roots: bool,
    ) -> Result<Self, HubError> {
        let resource = resource_url.trim_end_matches('/').to_string();
        if !resource.starts_with("https://") || !resource.contains("/IotHubs/") {
            return Err(HubError::Setup(format!(
                "management URL {resource:?}: expected https://…/providers/Microsoft.Devices/IotHubs/{{name}}"
            )));
        }
        let rest =
            Rest::new(&resource, auth, extra_roots, only_extra_roots).map_err(HubError::Setup)?;
        Ok(Self { rest, resource })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}?api-version={MANAGEMENT_API_VERSION}",
            self.resource
        )
    }

    /// The hub's SKU and units; a SKU that is not an IoT Hub tier is an error that names it.
    pub async fn sku(&self) -> Result<HubSku, HubError> {
        let (status, body) = self.send(self.rest.http.get(self.url(""))).await?;
        let resource: Resource = serde_json::from_str(&body)
            .map_err(|e| malformed(status, format!("the hub's resource does not parse: {e}")))?;
        let sku = resource
            .sku
            .ok_or_else(|| malformed(status, "the hub's resource has no sku".into()))?;
        let tier: Sku = sku
            .name
            .parse()
            .map_err(|e: super::quotas::UnknownSku| malformed(status, e.to_string()))?;
        let units = sku.capacity.unwrap_or(1);
        if !(1..=tier.limits().max_units).contains(&units) {
            return Err(malformed(
                status,
                format!(
                    "{tier} with {units} units: the tier allows 1 to {}",
                    tier.limits().max_units
                ),
            ));
        }
        Ok(HubSku { sku: tier, units })
    }

    fn cert_url(&self, name: &str, action: &str) -> String {
        self.url(&format!(
            "/certificates/{}{action}",
            super::sas::url_encode(name)
        ))
    }

    /// Uploads `pem` as CA certificate `name` (unverified until [`Self::verify`]).
    pub async fn upload_ca(&self, name: &str, pem: &str) -> Result<CaCertificate, HubError> {
        let body = serde_json::json!({"properties": {"certificate": pem}});
        let req = self.rest.http.put(self.cert_url(name, "")).json(&body);
        self.send_json(req).await
    }

    pub async fn get_ca(&self, name: &str) -> Result<CaCertificate, HubError> {
        self.send_json(self.rest.http.get(self.cert_url(name, "")))
            .await
    }

    /// Asks for a verification code; answers the code and the certificate's new etag.
    pub async fn verification_code(
        &self,
        name: &str,
        etag: &str,
    ) -> Result<(String, String), HubError> {
        let req = self
            .rest
            .http
            .post(self.cert_url(name, "/generateVerificationCode"))
            .header("If-Match", format!("\"{etag}\""));
        let answer: CaCertificate = self.send_json(req).await?;
        let code = answer
            .properties
            .verification_code
            .ok_or_else(|| malformed(200, "no verificationCode in the answer".into()))?;
        Ok((code, answer.etag))
    }

    /// Proves possession of the CA's key with `proof_pem`: a certificate whose subject CN is the
    /// verification code, signed by the CA.
    pub async fn verify(
        &self,
        name: &str,
        etag: &str,
        proof_pem: &str,
    ) -> Result<CaCertificate, HubError> {
        let req = self
            .rest
            .http
            .post(self.cert_url(name, "/verify"))
            .header("If-Match", format!("\"{etag}\""))
            .json(&serde_json::json!({"certificate": proof_pem}));
        self.send_json(req).await
    }

    async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, HubError> {
        let (status, body) = self.send(req).await?;
        serde_json::from_str(&body).map_err(|e| malformed(status, e.to_string()))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), HubError> {
        let answer = self.rest.send(req).await?;
        Ok((answer.status, answer.body))
    }
}
