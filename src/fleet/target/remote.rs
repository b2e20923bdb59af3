//! A remote target: clients for a real EZCA and IoT Hub (or the emulators run apart), built from
//! the scenario's addresses and credentials read from the environment.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::device::adapters::{EzcaCa, HubRegistry};
use crate::ezca::{Client as EzcaClient, RetryObserver, RetryPolicy, StaticToken, TokenSource};
use crate::fleet::error::FleetError;
use crate::iothub::ConnectionString;
use crate::iothub::amqp::Endpoint as AmqpEndpoint;
use crate::iothub::mqtt::MqttTransport;
use crate::iothub::registry::{RegistryAuth, RegistryClient};
use crate::iothub::service::ServiceClient;
use crate::metrics::Recorder;
use crate::scenario::{
    DeviceTransportKind, Provisioning, RemoteHub, RemoteTarget, Scenario, Span, TransportImpl,
};

use super::clients::{AMQP_TIMEOUT, C2dTarget, Clients, endpoint};

/// The Azure AD token source the scenario names for EZCA.
fn ezca_tokens(ezca: &crate::scenario::RemoteEzca) -> Result<Arc<dyn TokenSource>, FleetError> {
    use crate::ezca::aad::{EZCA_SCOPE, Flow, Provider, token_url};
    use crate::scenario::EzcaAuth;
    let provider =
        |flow| Provider::new(flow, EZCA_SCOPE).map(|p| Arc::new(p) as Arc<dyn TokenSource>);
    Ok(match &ezca.auth {
        None => Arc::new(StaticToken::new(env_secret(
            &ezca.token_env,
            "an Azure AD token for EZCA is needed",
        )?)),
        Some(EzcaAuth::Env(name)) => Arc::new(StaticToken::new(env_secret(
            name,
            "an Azure AD token for EZCA is needed",
        )?)),
        Some(EzcaAuth::File(path)) => provider(Flow::File(path.clone()))?,
        Some(EzcaAuth::ClientSecret {
            tenant,
            client_id,
            secret_env,
            authority_host,
        }) => {
            let host = authority_host
                .as_deref()
                .unwrap_or("https://login.microsoftonline.com");
            provider(Flow::ClientSecret {
                token_url: token_url(host, tenant),
                client_id: client_id.clone(),
                secret: env_secret(secret_env, "the EZCA app's client secret is needed")?,
            })?
        }
        Some(EzcaAuth::WorkloadIdentity {}) => {
            Arc::new(Provider::workload_identity_from_env(EZCA_SCOPE)?)
        }
        Some(EzcaAuth::ManagedIdentity {
            client_id,
            endpoint,
        }) => {
            // App Service and Functions publish their own endpoint and header; VMs use IMDS.
            let app_service = std::env::var("IDENTITY_ENDPOINT")
                .ok()
                .zip(std::env::var("IDENTITY_HEADER").ok());
            let (endpoint, header) = match (endpoint, app_service) {
                (Some(e), _) => (e.clone(), None),
                (None, Some((e, h))) => (e, Some(("X-IDENTITY-HEADER".to_string(), h))),
                (None, None) => (
                    "http://169.254.169.254/metadata/identity/oauth2/token".to_string(),
                    None,
                ),
            };
            provider(Flow::ManagedIdentity {
                endpoint,
                header,
                client_id: client_id.clone(),
            })?
        }
        Some(EzcaAuth::AzureCli {}) => provider(Flow::AzureCli {
            program: "az".into(),
        })?,
    })
}

pub(super) fn env_secret(name: &str, what: &str) -> Result<String, FleetError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| FleetError::Setup(format!("{what}: set the environment variable {name}")))
}

/// The scenario's client retry policy, each retry counted by the recorder.
pub(super) fn set_retry(client: &mut EzcaClient, delays: &[Span], recorder: &Arc<Recorder>) {
    let policy = RetryPolicy {
        delays: delays.iter().map(|s| s.0).collect(),
    };
    let recorder = recorder.clone();
    let observer: RetryObserver = Arc::new(move |endpoint: &str, reason: &str| {
        recorder.retry("ezca", endpoint, reason);
    });
    client.set_retry(policy, Some(observer));
}

pub(super) fn read_pem_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, FleetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FleetError::Setup(format!("{}: {e}", path.display())))?;
    crate::crypto::certs_from_pem(&text)
        .map_err(|e| FleetError::Setup(format!("{}: {e}", path.display())))
}

/// Clients for real EZCA and IoT Hub, with credentials from the environment.
pub(super) async fn remote(
    scenario: &Scenario,
    target: &RemoteTarget,
    recorder: &Arc<Recorder>,
) -> Result<Clients, FleetError> {
    let token_source = ezca_tokens(&target.ezca)?;
    let ezca_roots = match &target.ezca.trust_pem {
        Some(p) => read_pem_roots(p)?,
        None => Vec::new(),
    };
    let mut client = EzcaClient::new(&target.ezca.url, token_source, &ezca_roots, false)?;
    set_retry(&mut client, &target.ezca.client_retry, recorder);
    let ca = EzcaCa::discover_by(
        client,
        target.ezca.ca_id.as_deref(),
        target.ezca.ca_key_type.as_deref(),
    )
    .await?;
    let hub_roots = match &target.iothub.trust_pem {
        Some(p) => read_pem_roots(p)?,
        None => Vec::new(),
    };
    let dps = match scenario.fleet.provisioning() {
        Provisioning::Dps => target.dps.as_ref(),
        Provisioning::Registry => None,
    };
    let Some(dps) = dps else {
        let (host_name, registry, service, auth) = remote_registry(&target.iothub, &hub_roots)?;
        let c2d = remote_c2d(auth, &host_name, &hub_roots);
        let transport = remote_transport(scenario, &target.iothub, host_name, hub_roots)?;
        return Ok(Clients {
            ca,
            registry: Some(HubRegistry(
                registry.with_run_tag(target.iothub.run_tag.clone()),
            )),
            provisioning: None,
            transport,
            service: Some(service),
            c2d,
        });
    };
    let websocket = scenario.fleet.transport == DeviceTransportKind::Websocket;
    let dps_roots = match &dps.value.trust_pem {
        Some(p) => read_pem_roots(p)?,
        None => Vec::new(),
    };
    let provisioning = crate::fleet::dps::remote_client(&dps.value, dps_roots, websocket)?;
    let host_name = crate::fleet::dps::remote_hub_name(&target.iothub);
    // A DPS run needs no hub credentials, but the operator's events do: only then are they read.
    let (service, c2d) = match scenario.has_operator_events() {
        true => {
            let (_, _, service, auth) = remote_registry(&target.iothub, &hub_roots)?;
            (Some(service), remote_c2d(auth, &host_name, &hub_roots))
        }
        false => (None, None),
    };
    let mut transport = remote_transport(scenario, &target.iothub, host_name.clone(), hub_roots)?;
    crate::fleet::dps::route_remote_hub(&mut transport, &target.iothub, &host_name, websocket);
    Ok(Clients {
        ca,
        registry: None,
        provisioning: Some(provisioning),
        transport,
        service,
        c2d,
    })
}

/// The hub's AMQP endpoint for C2D: it takes a service policy's SAS, so only with a connection
/// string.
fn remote_c2d(
    auth: RegistryAuth,
    host_name: &str,
    roots: &[CertificateDer<'static>],
) -> Option<C2dTarget> {
    match auth {
        RegistryAuth::Sas(credentials) => Some(C2dTarget {
            endpoint: remote_amqp(host_name, roots),
            credentials,
        }),
        _ => None,
    }
}

/// The hub's host name, registry client and service client. Credentials: an Azure AD token
/// (with the host named in the scenario), or a connection string, whose HostName is the hub's.
fn remote_registry(
    hub: &RemoteHub,
    roots: &[CertificateDer<'static>],
) -> Result<(String, RegistryClient, ServiceClient, RegistryAuth), FleetError> {
    let (host_name, auth) = match (&hub.token_env, &hub.host) {
        (Some(env), Some(host)) => (
            host.clone(),
            RegistryAuth::Bearer(env_secret(env, "an Azure AD token for IoT Hub is needed")?),
        ),
        _ => {
            let conn = ConnectionString::parse(&env_secret(
                &hub.connection_string_env,
                "an IoT Hub connection string is needed",
            )?)?;
            (conn.host_name.clone(), RegistryAuth::Sas(conn))
        }
    };
    let registry_url = hub
        .registry_url
        .clone()
        .unwrap_or_else(|| format!("https://{host_name}"));
    let service = ServiceClient::new(&registry_url, auth.clone(), roots, false)
        .map_err(|e| FleetError::Setup(e.to_string()))?;
    let registry = RegistryClient::with_auth(&registry_url, auth.clone(), roots, false)?;
    Ok((host_name, registry, service, auth))
}

/// The hub's MQTT (or WebSocket) endpoint, trusted through the system's roots and `roots`.
fn remote_transport(
    scenario: &Scenario,
    hub: &RemoteHub,
    host_name: String,
    roots: Vec<CertificateDer<'static>>,
) -> Result<MqttTransport, FleetError> {
    let mut trust = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    trust.add_parsable_certificates(native.certs);
    trust.add_parsable_certificates(roots);
    if trust.is_empty() {
        return Err(FleetError::Setup(
            "no trusted roots for the hub's TLS: install CA certificates or set trust_pem".into(),
        ));
    }
    let websocket = scenario.fleet.transport == DeviceTransportKind::Websocket;
    let port = match websocket {
        true => hub.websocket_port,
        false => hub.mqtt_port,
    };
    let address = hub.address.clone().unwrap_or_else(|| host_name.clone());
    let mut transport = MqttTransport::new(endpoint(address, port, host_name, websocket), trust);
    transport.use_lean(scenario.fleet.transport_impl == TransportImpl::Lean);
    Ok(transport)
}

/// A real hub's AMQP endpoint (`{host}:5671`), trusted through the system's roots and `roots`.
pub fn remote_amqp(host: &str, roots: &[CertificateDer<'static>]) -> AmqpEndpoint {
    let mut trust = rustls::RootCertStore::empty();
    trust.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    trust.add_parsable_certificates(roots.iter().cloned());
    AmqpEndpoint {
        host: host.to_string(),
        address: format!("{host}:5671"),
        roots: Arc::new(trust),
        timeout: AMQP_TIMEOUT,
    }
}

/// What operator commands (`fleetsim plan --check`, `cleanup`, `hub upload-ca`) need of a
/// remote hub: its registry, its service API (queries), and its ARM resource when the scenario
/// names `management_url`.
pub struct HubAdmin {
    pub host_name: String,
    pub registry: RegistryClient,
    pub service: ServiceClient,
    pub management: Option<crate::iothub::management::ManagementClient>,
}

/// [`HubAdmin`] for `hub`, with credentials from the environment as a run takes them. The
/// management resource takes `management_token_env`'s token, else the registry's credentials.
pub fn hub_admin(hub: &RemoteHub) -> Result<HubAdmin, FleetError> {
    use crate::iothub::management::ManagementClient;
    let roots = match &hub.trust_pem {
        Some(p) => read_pem_roots(p)?,
        None => Vec::new(),
    };
    let (host_name, registry, service, auth) = remote_registry(hub, &roots)?;
    let management = match &hub.management_url {
        Some(url) => {
            let auth = match env_secret(&hub.management_token_env, "") {
                Ok(token) => RegistryAuth::Bearer(token),
                Err(_) => auth,
            };
            Some(
                ManagementClient::new(url, auth, &roots, false)
                    .map_err(|e| FleetError::Setup(e.to_string()))?,
            )
        }
        None => None,
    };
    Ok(HubAdmin {
        host_name,
        registry,
        service,
        management,
    })
}

/// An EZCA client for the scenario's remote CA (no retries: operator commands say what failed).
pub fn ezca_client(target: &RemoteTarget) -> Result<EzcaClient, FleetError> {
    let token_source = ezca_tokens(&target.ezca)?;
    let ezca_roots = match &target.ezca.trust_pem {
        Some(p) => read_pem_roots(p)?,
        None => Vec::new(),
    };
    Ok(EzcaClient::new(
        &target.ezca.url,
        token_source,
        &ezca_roots,
        false,
    )?)
}
