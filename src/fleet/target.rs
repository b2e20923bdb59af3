//! Turns a scenario's `target` into the services devices use: the embedded emulators started on
//! loopback, or clients for real EZCA and IoT Hub built from credentials in the environment.
//! Either way the devices get the same clients, so both targets run the same code paths. With
//! `fleet.provisioning: dps` the registry gives way to DPS ([`super::dps`]), and the transport
//! dials the hub DPS assigns each device.

use std::sync::Arc;

use super::backend::BackendTarget;
use super::error::FleetError;
use super::resume::Opened;
use crate::crypto::pool::KeyPool;
use crate::device::Services;
use crate::device::adapters::HubBackends;
use crate::device::backoff::Backoff;
use crate::device::gate::Gate;
use crate::device::keys::KeySource;
use crate::emulator::Emulators;
use crate::iothub::amqp::EventHubConnectionString;
use crate::iothub::service::ServiceClient;
use crate::metrics::Recorder;
use crate::scenario::{KeySourceKind, Scenario, Target};

mod clients;
mod embedded;
mod remote;

pub use clients::C2dTarget;
pub use remote::{HubAdmin, ezca_client, hub_admin};

use embedded::{caller_oid, embedded_amqp, embedded_clients, start_emulators};
use remote::{env_secret, read_pem_roots, remote, remote_amqp};

/// The services the devices of a fleet run share: EZCA and IoT Hub, embedded or real.
pub type FleetServices = Services<HubBackends>;

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
