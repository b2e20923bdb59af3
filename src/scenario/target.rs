//! Where a scenario's devices enrol and connect: the embedded emulators (with their capacity and
//! throttling settings) or real services (with where their credentials come from); either may
//! name a DPS ([`super::dps`]).

use std::num::NonZeroU32;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::dps::{EmbeddedDps, RemoteDps};
use super::units::{Percent, Rate, Span};
use crate::iothub::quotas::Sku;

/// Where the devices enrol and connect.
// Read once per run from the scenario file: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// The EZCA and IoT Hub emulators, started in-process on loopback.
    Embedded(EmbeddedTarget),
    /// Real services (or emulators started with `fleetsim emulate`).
    Remote(RemoteTarget),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedTarget {
    /// The embedded EZCA emulator: capacity, latency, errors, issuing CA.
    #[serde(default)]
    pub ca: EmbeddedCa,
    /// The embedded IoT Hub emulator: tier, units, throttling.
    #[serde(default)]
    pub hub: EmbeddedHub,
    /// The Device Provisioning Service, for `fleet.provisioning: dps`.
    #[serde(default)]
    #[schemars(with = "Option<EmbeddedDps>")]
    pub dps: Option<Spanned<EmbeddedDps>>,
}

/// The embedded EZCA emulator.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedCa {
    /// The CA's `MaxCertLifeDays`.
    #[serde(default = "default_max_cert_life_days")]
    pub max_cert_life_days: u32,
    /// Capacity model: issuances admitted per unit of time (unlimited when absent).
    #[serde(default)]
    pub issuance_rate: Option<Rate>,
    /// How long a request over `issuance_rate` may wait for its slot before a 429.
    #[serde(default = "default_ca_queue")]
    pub queue: Span,
    /// Signings in progress at once (unlimited when absent).
    #[serde(default)]
    pub concurrency: Option<NonZeroU32>,
    /// Service time of one issuance (log-normal with this median and p99).
    #[serde(default)]
    pub latency: Option<LatencyModel>,
    /// Share of issuance requests that fail with 503.
    #[serde(default)]
    pub error_rate: Option<Percent>,
    /// DomainRestrictions: names that may be registered (a name or any name under it); all
    /// when empty.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// The emulator runs an ECDSA (P-256) and an RSA-2048 issuing CA under one root, as a tenant
    /// with two SSL CAs; devices request from this one.
    #[serde(default)]
    pub issuing_ca: IssuingCaChoice,
    /// How fleetsim's EZCA client retries 408/5xx and network failures by itself: the waits
    /// before each retry (default: the official clients' `[2s, 4s, 8s]`; `[]` for none).
    #[serde(default = "default_client_retry")]
    pub client_retry: Vec<Span>,
    /// EZCA's one-click trust with "disable device on revoke": revoking a certificate disables
    /// its device in the embedded hub, which drops the connection and refuses reconnects. Off,
    /// a revoked device stays connected (IoT Hub does not check revocation).
    #[serde(default)]
    pub disable_device_on_revoke: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IssuingCaChoice {
    #[default]
    Ecdsa,
    Rsa,
}

/// The official EZCA clients' retry delays (Polly: 2 s, 4 s, 8 s).
pub fn default_client_retry() -> Vec<Span> {
    [2, 4, 8]
        .map(|s| Span(std::time::Duration::from_secs(s)))
        .to_vec()
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyModel {
    /// Median service time.
    pub p50: Span,
    /// 99th percentile of the service time.
    pub p99: Span,
}

impl Default for EmbeddedCa {
    fn default() -> Self {
        Self {
            max_cert_life_days: default_max_cert_life_days(),
            issuance_rate: None,
            queue: default_ca_queue(),
            concurrency: None,
            latency: None,
            error_rate: None,
            allowed_domains: Vec::new(),
            issuing_ca: IssuingCaChoice::default(),
            client_retry: default_client_retry(),
            disable_device_on_revoke: false,
        }
    }
}

fn default_ca_queue() -> Span {
    Span(std::time::Duration::from_secs(1))
}

/// The embedded IoT Hub emulator.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedHub {
    /// The hub's host name as devices put it in their MQTT username.
    #[serde(default = "default_hub_host")]
    pub host: String,
    /// Throttles and daily quota of this tier (reference §5); unlimited when absent.
    #[serde(default)]
    pub sku: Option<Sku>,
    /// Units of the tier: its throttles and daily quota scale with them (1 by default).
    #[serde(default = "default_units")]
    pub units: NonZeroU32,
    /// How long the hub holds back a request over its throttle (delayed CONNACK, PUBACK or
    /// response) before it refuses it instead.
    #[serde(default = "default_shaping")]
    pub shaping: Span,
    /// CONNACK code for a disabled device: 3 (observed) or 5 (newer docs).
    #[serde(default = "default_disabled_connack")]
    pub disabled_connack: u8,
    /// Extra CA certificates (PEM files) to upload to the hub's trust, besides the embedded CA.
    #[serde(default)]
    pub trusted_cas: Vec<PathBuf>,
    /// Loopback addresses the MQTT endpoint listens on (default: 127.0.0.1 only). Devices are
    /// spread over them, so a run is not limited by one address's ~28k source ports.
    #[serde(default)]
    pub mqtt_addresses: Vec<std::net::IpAddr>,
}

impl Default for EmbeddedHub {
    fn default() -> Self {
        Self {
            host: default_hub_host(),
            sku: None,
            units: default_units(),
            shaping: default_shaping(),
            disabled_connack: default_disabled_connack(),
            trusted_cas: Vec::new(),
            mqtt_addresses: Vec::new(),
        }
    }
}

fn default_hub_host() -> String {
    "fleetsim-hub.azure-devices.net".into()
}
fn default_max_cert_life_days() -> u32 {
    397
}
fn default_units() -> NonZeroU32 {
    NonZeroU32::MIN
}
fn default_shaping() -> Span {
    Span(std::time::Duration::from_millis(500))
}
fn default_disabled_connack() -> u8 {
    3
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteTarget {
    /// The EZCA instance: URL, SSL CA and where Azure AD tokens come from.
    pub ezca: RemoteEzca,
    /// The hub (with `fleet.provisioning: dps`, only its ports, trust and `address`: DPS
    /// assigns the hub and creates the identities).
    #[serde(default)]
    pub iothub: RemoteHub,
    /// The Device Provisioning Service, for `fleet.provisioning: dps`.
    #[serde(default)]
    #[schemars(with = "Option<RemoteDps>")]
    pub dps: Option<Spanned<RemoteDps>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteEzca {
    /// Base URL, e.g. `https://portal.ezca.io/`.
    pub url: String,
    /// The SSL CA to request from; when absent, the only one `GetAvailableSSLCAs` returns.
    #[serde(default)]
    pub ca_id: Option<String>,
    /// Without `ca_id`: the only SSL CA whose `CAKeyType` is this (e.g. `EC P256`, `RSA 2048`).
    #[serde(default)]
    pub ca_key_type: Option<String>,
    /// Environment variable that holds an Azure AD access token for EZCA (when `auth` is absent).
    #[serde(default = "default_ezca_token_env")]
    pub token_env: String,
    /// Where Azure AD tokens for EZCA come from, instead of `token_env`.
    #[serde(default)]
    pub auth: Option<EzcaAuth>,
    /// Extra PEM roots to trust for the CA's TLS (for a self-hosted or emulated EZCA).
    #[serde(default)]
    pub trust_pem: Option<PathBuf>,
    /// Waits before the client's own retries of 408/5xx and network failures (default: the
    /// official clients' `[2s, 4s, 8s]`; `[]` for none). Each retry is counted in the report.
    #[serde(default = "default_client_retry")]
    pub client_retry: Vec<Span>,
}

/// Azure AD token sources for the real EZCA (scope `https://management.core.windows.net/.default`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum EzcaAuth {
    /// A token in this environment variable.
    Env(String),
    /// A token in this file, re-read when it nears expiry (a mounted secret).
    File(PathBuf),
    /// An app registration's client secret (client-credentials grant).
    ClientSecret {
        /// The Azure AD tenant (directory) id.
        tenant: String,
        /// The app registration's client (application) id.
        client_id: String,
        /// Environment variable holding the secret.
        secret_env: String,
        /// Azure AD's host (default: `login.microsoftonline.com`).
        #[serde(default)]
        authority_host: Option<String>,
    },
    /// Kubernetes workload identity, from the variables its webhook sets.
    WorkloadIdentity {},
    /// The VM's or app's managed identity.
    ManagedIdentity {
        /// A user-assigned identity's client id (default: the system-assigned one).
        #[serde(default)]
        client_id: Option<String>,
        /// Token endpoint (defaults: `IDENTITY_ENDPOINT`, else the instance metadata service).
        #[serde(default)]
        endpoint: Option<String>,
    },
    /// `az account get-access-token`.
    AzureCli {},
}

fn default_ezca_token_env() -> String {
    "EZCA_TOKEN".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteHub {
    /// Environment variable holding the hub's service connection string
    /// (`HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`).
    #[serde(default = "default_hub_conn_env")]
    pub connection_string_env: String,
    /// Instead of a connection string: an environment variable holding an Azure AD access token
    /// for the registry (scope `https://iothubs.azure.net/.default`); `host` is then required.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The hub's host name (`myhub.azure-devices.net`) when authorising with `token_env`.
    #[serde(default)]
    pub host: Option<String>,
    /// Address devices connect to instead of the connection string's HostName (a private
    /// endpoint, or `fleetsim emulate`); HostName still goes in usernames and SAS tokens.
    #[serde(default)]
    pub address: Option<String>,
    /// MQTT port (8883 on Azure).
    #[serde(default = "default_mqtt_port")]
    pub mqtt_port: u16,
    /// MQTT-over-WebSocket port (443 on Azure), used with `fleet.transport: websocket`.
    #[serde(default = "default_websocket_port")]
    pub websocket_port: u16,
    /// Registry REST base URL; defaults to `https://{HostName}`.
    #[serde(default)]
    pub registry_url: Option<String>,
    /// Extra PEM roots to trust for the hub's TLS (Azure's roots are built in).
    #[serde(default)]
    pub trust_pem: Option<PathBuf>,
    /// The hub's tier, for `fleetsim plan` and the check `fleetsim run` makes before a remote
    /// run (`fleetsim plan --check` reads it from the hub instead).
    #[serde(default)]
    pub sku: Option<Sku>,
    /// The hub's units of `sku`.
    #[serde(default = "default_units")]
    pub units: NonZeroU32,
    /// The hub's Azure Resource Manager resource, for reading its tier and uploading CAs:
    /// `https://management.azure.com/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Devices/IotHubs/{name}`
    /// (`fleetsim emulate` writes its own).
    #[serde(default)]
    pub management_url: Option<String>,
    /// Environment variable holding an Azure AD token for `management_url` (scope
    /// `https://management.azure.com/.default`); without it the connection string's key signs.
    #[serde(default = "default_management_token_env")]
    pub management_token_env: String,
    /// Prefix every device id with the run id (`{run}-sim-000001`), so the run's identities are
    /// told apart by name as well as by their `fleetsim.run` twin tag.
    #[serde(default = "default_true")]
    pub run_prefix: bool,
    /// The run id `fleetsim run` tags identities with (not read from the file).
    #[serde(skip)]
    pub run_tag: Option<String>,
}

fn default_management_token_env() -> String {
    "AZURE_MANAGEMENT_TOKEN".into()
}
fn default_true() -> bool {
    true
}

impl Default for RemoteHub {
    fn default() -> Self {
        Self {
            connection_string_env: default_hub_conn_env(),
            token_env: None,
            host: None,
            address: None,
            mqtt_port: default_mqtt_port(),
            websocket_port: default_websocket_port(),
            registry_url: None,
            trust_pem: None,
            sku: None,
            units: default_units(),
            management_url: None,
            management_token_env: default_management_token_env(),
            run_prefix: true,
            run_tag: None,
        }
    }
}

fn default_hub_conn_env() -> String {
    "IOTHUB_CONNECTION_STRING".into()
}
fn default_mqtt_port() -> u16 {
    8883
}
fn default_websocket_port() -> u16 {
    443
}
