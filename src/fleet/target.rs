//! Turns a scenario's `target` into the services devices use: the embedded emulators started on
//! loopback, or clients for real EZCA and IoT Hub built from credentials in the environment.
//! Either way the devices get the same clients, so both targets run the same code paths. With
//! `fleet.provisioning: dps` the registry gives way to DPS ([`super::dps`]), and the transport
//! dials the hub DPS assigns each device.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::backend::BackendTarget;
use super::error::FleetError;
use super::resume::Opened;
use crate::clock::Clock;
use crate::crypto::pool::KeyPool;
use crate::device::Services;
use crate::device::adapters::{EzcaCa, HubBackends, HubRegistry};
use crate::device::backoff::Backoff;
use crate::device::dps::DpsProvisioning;
use crate::device::gate::Gate;
use crate::device::keys::KeySource;
use crate::emulator::ca::IssuingKey;
use crate::emulator::ca::capacity::CapacityConfig;
use crate::emulator::hub::throttle::HubLimits;
use crate::emulator::{CaConfig, Emulators, HubConfig};
use crate::ezca::{Client as EzcaClient, RetryObserver, RetryPolicy, StaticToken, TokenSource};
use crate::iothub::ConnectionString;
use crate::iothub::amqp::{Endpoint as AmqpEndpoint, EventHubConnectionString};
use crate::iothub::mqtt::{MqttEndpoint, MqttTransport};
use crate::iothub::registry::{RegistryAuth, RegistryClient};
use crate::iothub::service::ServiceClient;
use crate::metrics::Recorder;
use crate::scenario::{
    DeviceTransportKind, EmbeddedTarget, IssuingCaChoice, KeySourceKind, Provisioning, RemoteHub,
    RemoteTarget, Scenario, Span, Target,
};

/// How long an AMQP connection and each of its requests may take.
const AMQP_TIMEOUT: Duration = Duration::from_secs(30);

/// The services the devices of a fleet run share: EZCA and IoT Hub, embedded or real.
pub type FleetServices = Services<HubBackends>;

/// Where the operator sends cloud-to-device messages: the hub's AMQP endpoint and a service
/// policy's credentials.
#[derive(Clone)]
pub struct C2dTarget {
    pub endpoint: AmqpEndpoint,
    pub credentials: ConnectionString,
}

pub struct Resolved {
    pub services: Arc<FleetServices>,
    pub emulators: Option<Emulators>,
    /// The hub's service API, for fleetsim as the operator (the scenario's method, desired and
    /// query events); none in a remote DPS run without such events.
    pub service: Option<Arc<ServiceClient>>,
    /// The hub's AMQP endpoint for the operator's C2D messages (none: no connection string).
    pub c2d: Option<C2dTarget>,
    /// Where fleetsim as the backend reads, when the scenario asks it to (`backend.consume`).
    pub backend: Option<BackendTarget>,
}

/// The clients of the target, before they join the services the devices share: the registry
/// or DPS, as the scenario provisions, and the hub's service API when fleetsim can reach it.
struct Clients {
    ca: EzcaCa,
    registry: Option<HubRegistry>,
    provisioning: Option<DpsProvisioning>,
    transport: MqttTransport,
    /// None in a remote DPS run without operator events (it may have no hub credentials).
    service: Option<ServiceClient>,
    c2d: Option<C2dTarget>,
}

/// The services every device of the run shares, complete: the clients for the scenario's
/// target (starting the embedded emulators if it names them) with the run's `recorder`, the
/// fleet's `gate` and, with `--state`, the soak state's journal.
pub async fn resolve(
    scenario: &Scenario,
    recorder: Arc<Recorder>,
    gate: Gate,
    state: Option<&Opened>,
) -> Result<Resolved, FleetError> {
    let (clients, emulators) = match &scenario.target.value {
        Target::Embedded(e) => {
            let emulators = start_emulators(scenario, e, state).await?;
            let caller_oid = caller_oid(&emulators, state);
            let clients = embedded_clients(scenario, e, &emulators, &caller_oid, &recorder).await?;
            (clients, Some(emulators))
        }
        Target::Remote(r) => (remote(scenario, r, &recorder).await?, None),
    };
    let backend = backend_target(scenario, emulators.as_ref())?;
    let services = Services {
        ca: clients.ca,
        registry: clients.registry,
        provisioning: clients.provisioning,
        transport: clients.transport,
        recorder,
        backoff: Backoff::default(),
        gate,
        keys: key_source(scenario)?,
        state: state.map(Opened::journal),
    };
    Ok(Resolved {
        services: Arc::new(services),
        emulators,
        service: clients.service.map(Arc::new),
        c2d: clients.c2d,
        backend,
    })
}

/// The Event Hub-compatible endpoint the backend reads: the embedded hub's (its consumer group
/// created if need be) or, for a remote target, the one the connection string in
/// `backend.connection_string_env` names.
fn backend_target(
    scenario: &Scenario,
    emulators: Option<&Emulators>,
) -> Result<Option<BackendTarget>, FleetError> {
    let b = &scenario.backend;
    if !b.consume {
        return Ok(None);
    }
    let bad = |e: crate::iothub::amqp::AmqpError| FleetError::Setup(format!("backend: {e}"));
    let (credentials, endpoint) = match (emulators, &scenario.target.value) {
        (Some(e), _) => {
            let credentials =
                EventHubConnectionString::parse(&e.event_hub_connection_string()).map_err(bad)?;
            if b.consumer_group != "$Default" {
                e.hub.event_log().add_consumer_group(&b.consumer_group);
            }
            let endpoint = embedded_amqp(e, &credentials.host)?;
            (credentials, endpoint)
        }
        (None, Target::Remote(r)) => {
            let cs = env_secret(
                &b.connection_string_env,
                "backend.consume needs the hub's Event Hub-compatible connection string",
            )?;
            let credentials = EventHubConnectionString::parse(&cs).map_err(bad)?;
            let roots = match &r.iothub.trust_pem {
                Some(p) => read_pem_roots(p)?,
                None => Vec::new(),
            };
            let endpoint = remote_amqp(&credentials.host, &roots);
            (credentials, endpoint)
        }
        (None, Target::Embedded(_)) => {
            return Err(FleetError::Setup(
                "backend: the embedded hub is not running".into(),
            ));
        }
    };
    Ok(Some(BackendTarget {
        endpoint,
        credentials,
        consumer_group: b.consumer_group.clone(),
    }))
}

fn endpoint(host: String, port: u16, hub_host: String, websocket: bool) -> MqttEndpoint {
    MqttEndpoint {
        websocket,
        host,
        port,
        hub_host,
        keep_alive: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(30),
        ack_timeout: Duration::from_secs(10),
    }
}

/// Starts the embedded emulators on loopback as the scenario configures them (restored from the
/// soak state, if one is open).
async fn start_emulators(
    scenario: &Scenario,
    target: &EmbeddedTarget,
    state: Option<&Opened>,
) -> Result<Emulators, FleetError> {
    let (ca_config, hub_config) = emulator_configs(scenario, target);
    let hub = &target.hub;
    // Read extra CAs before starting anything, so a bad path fails fast.
    let extra_cas: Vec<_> = hub
        .trusted_cas
        .iter()
        .map(|p| read_pem_roots(p))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    // The embedded emulators accept test credentials: loopback only.
    if let Some(ip) = hub.mqtt_addresses.iter().find(|ip| !ip.is_loopback()) {
        return Err(FleetError::Setup(format!(
            "target.embedded.hub.mqtt_addresses: {ip} is not a loopback address (127.0.0.0/8 or ::1)"
        )));
    }
    let mut listen = hub.mqtt_addresses.iter().copied();
    let ip = listen
        .next()
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let restore = state.map(|s| s.restore.clone()).unwrap_or_default();
    let addrs = crate::emulator::Addresses::ephemeral(ip);
    let mut emulators = Emulators::start_restored(addrs, &ca_config, &hub_config, &restore).await?;
    for extra in listen {
        emulators
            .add_mqtt_listener(std::net::SocketAddr::new(extra, 0))
            .await?;
    }
    for ca in &extra_cas {
        emulators.hub.trust_ca(ca.clone());
    }
    if let Some(dps) = &target.dps {
        super::dps::start_embedded(&mut emulators, &dps.value, &hub_config, &extra_cas, ip).await?;
    }
    Ok(emulators)
}

/// The embedded CA's and hub's configuration from the scenario.
fn emulator_configs(scenario: &Scenario, target: &EmbeddedTarget) -> (CaConfig, HubConfig) {
    let clock = match &scenario.time_scale {
        Some(scale) => Clock::compressed(scale.value.0),
        None => Clock::real(),
    };
    let ca_config = CaConfig {
        clock,
        max_cert_life_days: target.ca.max_cert_life_days,
        capacity: capacity_of(&target.ca),
        allowed_domains: target.ca.allowed_domains.clone(),
        disable_devices_on_revoke: target.ca.disable_device_on_revoke,
    };
    let hub = &target.hub;
    let limits = match hub.sku {
        Some(sku) => HubLimits::for_sku(sku, hub.units.get(), hub.shaping.0),
        None => HubLimits::unlimited(),
    };
    let hub_config = HubConfig {
        host_name: hub.host.clone(),
        disabled_connack: hub.disabled_connack,
        limits,
    };
    (ca_config, hub_config)
}

/// The caller id the fleet uses with the embedded CA; it owns every device's domain, so a
/// resumed run calls as the same one (and the state journals the emulators from now on).
fn caller_oid(emulators: &Emulators, state: Option<&Opened>) -> String {
    match state {
        Some(s) => s.attach(emulators),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// Clients for the embedded emulators, as the fleet's caller.
async fn embedded_clients(
    scenario: &Scenario,
    target: &EmbeddedTarget,
    emulators: &Emulators,
    caller_oid: &str,
    recorder: &Arc<Recorder>,
) -> Result<Clients, FleetError> {
    let roots = [emulators.tls_root.clone()];
    let lifetime = scenario.duration.0.as_secs() + 3600;
    let token = emulators
        .ca
        .mint_token(caller_oid, "fleetsim@emulator.invalid", lifetime);
    let mut client = EzcaClient::new(
        emulators.ca.url(),
        Arc::new(StaticToken::new(token)),
        &roots,
        true,
    )?;
    set_retry(&mut client, &target.ca.client_retry, recorder);
    let issuing = match target.ca.issuing_ca {
        IssuingCaChoice::Ecdsa => IssuingKey::EcdsaP256,
        IssuingCaChoice::Rsa => IssuingKey::Rsa2048,
    };
    let ca_id = emulators.ca.ca_id(issuing);
    let ca = EzcaCa::discover(client, ca_id.as_deref()).await?;
    let websocket = scenario.fleet.transport == DeviceTransportKind::Websocket;
    // The operator talks to the first hub (validation keeps operator events to one hub).
    let auth = RegistryAuth::Sas(emulators.hub.connection_string());
    let service = ServiceClient::new(&emulators.hub_registry_url, auth, &roots, true)
        .map_err(|e| FleetError::Setup(e.to_string()))?;
    let c2d = Some(C2dTarget {
        endpoint: embedded_amqp(emulators, emulators.hub.host_name())?,
        credentials: emulators.hub.connection_string(),
    });
    if scenario.fleet.provisioning() == Provisioning::Dps {
        return Ok(Clients {
            ca,
            registry: None,
            provisioning: Some(super::dps::embedded_client(emulators, websocket)?),
            transport: embedded_transport(scenario, target, emulators)?,
            service: Some(service),
            c2d,
        });
    }
    let registry = RegistryClient::new(
        &emulators.hub_registry_url,
        emulators.hub.connection_string(),
        &roots,
        true,
    )?;
    Ok(Clients {
        ca,
        registry: Some(HubRegistry(registry)),
        provisioning: None,
        transport: embedded_transport(scenario, target, emulators)?,
        service: Some(service),
        c2d,
    })
}

/// The embedded hub's AMQP endpoint, trusted through the emulators' root.
pub fn embedded_amqp(emulators: &Emulators, host: &str) -> Result<AmqpEndpoint, FleetError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(emulators.tls_root.clone())
        .map_err(|e| FleetError::Setup(e.to_string()))?;
    Ok(AmqpEndpoint {
        host: host.to_string(),
        address: emulators.amqp_addr.to_string(),
        roots: Arc::new(roots),
        timeout: AMQP_TIMEOUT,
    })
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

/// The embedded hub's MQTT endpoint (or its WebSocket one), spread over its listeners.
fn embedded_transport(
    scenario: &Scenario,
    target: &EmbeddedTarget,
    emulators: &Emulators,
) -> Result<MqttTransport, FleetError> {
    let mut trust = rustls::RootCertStore::empty();
    trust
        .add(emulators.tls_root.clone())
        .map_err(|e| FleetError::Setup(e.to_string()))?;
    let websocket = scenario.fleet.transport == DeviceTransportKind::Websocket;
    let addr = match websocket {
        true => emulators.hub_websocket_addr,
        false => emulators.hub_mqtt_addr,
    };
    let mut transport = MqttTransport::new(
        endpoint(
            addr.ip().to_string(),
            addr.port(),
            target.hub.host.clone(),
            websocket,
        ),
        trust,
    );
    if !websocket {
        transport.spread_over(
            emulators
                .hub_mqtt_extra
                .iter()
                .map(|a| (a.ip().to_string(), a.port())),
        );
    }
    if emulators.dps.is_some() {
        let mut first = vec![addr];
        if !websocket {
            first.extend(emulators.hub_mqtt_extra.iter().copied());
        }
        super::dps::route_hubs(&mut transport, emulators, first);
    }
    Ok(transport)
}

/// The scenario's key source. A pool that lacks keys for this fleet is topped up in the
/// background (one thread per core but one, leaving a core to the run) and the user is told.
fn key_source(scenario: &Scenario) -> Result<KeySource, FleetError> {
    let c = &scenario.certificate;
    if c.key_source == KeySourceKind::Fresh {
        return Ok(KeySource::fresh());
    }
    let pool = KeyPool::open_default().map_err(|e| FleetError::Setup(e.to_string()))?;
    let devices = u64::from(scenario.fleet.devices.get());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let keys = KeySource::pool(pool.clone(), c.key, devices, (cores - 1).max(1));
    let missing = keys.missing();
    if missing > 0 {
        eprintln!(
            "fleetsim: the {} key pool in {} has {} of the {devices} keys this run needs; the other {missing} are generated now, in the background and by devices that need them first (the waits are in the report). Fill it first with: fleetsim keys generate --kind {} --count {devices}",
            c.key.name(),
            pool.root().display(),
            devices - missing,
            c.key.name(),
        );
    }
    Ok(keys)
}

fn capacity_of(ca: &crate::scenario::EmbeddedCa) -> CapacityConfig {
    CapacityConfig {
        rate: ca.issuance_rate.map(|r| r.0),
        queue: ca.queue.0,
        concurrency: ca.concurrency.map(|c| c.get() as usize),
        latency_p50: ca.latency.map_or(Duration::ZERO, |l| l.p50.0),
        latency_p99: ca.latency.map_or(Duration::ZERO, |l| l.p99.0),
        error_rate: ca.error_rate.map_or(0.0, |p| p.fraction()),
    }
}

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

fn env_secret(name: &str, what: &str) -> Result<String, FleetError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| FleetError::Setup(format!("{what}: set the environment variable {name}")))
}

/// The scenario's client retry policy, each retry counted by the recorder.
fn set_retry(client: &mut EzcaClient, delays: &[Span], recorder: &Arc<Recorder>) {
    let policy = RetryPolicy {
        delays: delays.iter().map(|s| s.0).collect(),
    };
    let recorder = recorder.clone();
    let observer: RetryObserver = Arc::new(move |endpoint: &str, reason: &str| {
        recorder.retry("ezca", endpoint, reason);
    });
    client.set_retry(policy, Some(observer));
}

fn read_pem_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, FleetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FleetError::Setup(format!("{}: {e}", path.display())))?;
    crate::crypto::certs_from_pem(&text)
        .map_err(|e| FleetError::Setup(format!("{}: {e}", path.display())))
}

/// Clients for real EZCA and IoT Hub, with credentials from the environment.
async fn remote(
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
            registry: Some(HubRegistry(registry)),
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
    let provisioning = super::dps::remote_client(&dps.value, dps_roots, websocket)?;
    let host_name = super::dps::remote_hub_name(&target.iothub);
    // A DPS run needs no hub credentials, but the operator's events do: only then are they read.
    let (service, c2d) = match scenario.has_operator_events() {
        true => {
            let (_, _, service, auth) = remote_registry(&target.iothub, &hub_roots)?;
            (Some(service), remote_c2d(auth, &host_name, &hub_roots))
        }
        false => (None, None),
    };
    let mut transport = remote_transport(scenario, &target.iothub, host_name.clone(), hub_roots)?;
    super::dps::route_remote_hub(&mut transport, &target.iothub, &host_name, websocket);
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
    Ok(MqttTransport::new(
        endpoint(address, port, host_name, websocket),
        trust,
    ))
}
