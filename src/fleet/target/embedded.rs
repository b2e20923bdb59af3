//! The embedded target: the EZCA, IoT Hub (and DPS) emulators started in-process on loopback,
//! and the clients the devices use to reach them.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::device::adapters::{EzcaCa, HubRegistry};
use crate::emulator::ca::IssuingKey;
use crate::emulator::ca::capacity::CapacityConfig;
use crate::emulator::hub::throttle::HubLimits;
use crate::emulator::{CaConfig, Emulators, HubConfig};
use crate::ezca::{Client as EzcaClient, StaticToken};
use crate::fleet::error::FleetError;
use crate::fleet::resume::Opened;
use crate::iothub::amqp::Endpoint as AmqpEndpoint;
use crate::iothub::mqtt::MqttTransport;
use crate::iothub::registry::{RegistryAuth, RegistryClient};
use crate::iothub::service::ServiceClient;
use crate::metrics::Recorder;
use crate::scenario::{
    DeviceTransportKind, EmbeddedTarget, IssuingCaChoice, Provisioning, Scenario, TransportImpl,
};

use super::clients::{AMQP_TIMEOUT, C2dTarget, Clients, endpoint};
use super::remote::{read_pem_roots, set_retry};

/// Starts the embedded emulators on loopback as the scenario configures them (restored from the
/// soak state, if one is open).
pub(super) async fn start_emulators(
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
        crate::fleet::dps::start_embedded(&mut emulators, &dps.value, &hub_config, &extra_cas, ip)
            .await?;
    }
    if !scenario.backend.consume {
        // Nothing reads the hub's Event Hub endpoint in this run: keep the latest few events,
        // not the 100,000 per partition a reader could need (tens of MiB in a long soak).
        let hubs =
            std::iter::once(&emulators.hub).chain(emulators.extra_hubs.iter().map(|h| &h.hub));
        for hub in hubs {
            hub.event_log().keep_at_most(UNREAD_EVENTS_KEPT);
        }
    }
    Ok(emulators)
}

/// Events each partition of an embedded hub keeps when the run has no backend reading them.
const UNREAD_EVENTS_KEPT: usize = 1_000;

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
pub(super) fn caller_oid(emulators: &Emulators, state: Option<&Opened>) -> String {
    match state {
        Some(s) => s.attach(emulators),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// Clients for the embedded emulators, as the fleet's caller.
pub(super) async fn embedded_clients(
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
            provisioning: Some(crate::fleet::dps::embedded_client(emulators, websocket)?),
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
    transport.use_lean(scenario.fleet.transport_impl == TransportImpl::Lean);
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
        crate::fleet::dps::route_hubs(&mut transport, emulators, first);
    }
    Ok(transport)
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
