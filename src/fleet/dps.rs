//! DPS for a run with `fleet.provisioning: dps`: the embedded one started with the other
//! emulators (DPS, `hubs - 1` more hubs like the first, and an enrolment group that admits every
//! certificate the embedded CA issues, hashed or static over the hubs), the routes that let
//! devices dial each embedded hub by its name (and a remote hub at `iothub.address`), and the
//! device-side client for the embedded or the real service.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::error::FleetError;
use crate::device::dps::DpsProvisioning;
use crate::emulator::dps::DpsLimits;
use crate::emulator::dps::enrollment::{AllocationPolicy, EnrollmentGroup};
use crate::emulator::{DpsAddresses, DpsConfig, EZCA_ROOT_CERTIFICATE, Emulators, HubConfig};
use crate::iothub::ConnectionString;
use crate::iothub::dps::{DpsClient, DpsEndpoint, Polling};
use crate::iothub::mqtt::MqttTransport;
use crate::scenario::{DpsAllocation, DpsLimitsChoice, EmbeddedDps, RemoteDps, RemoteHub};

/// The enrolment group an embedded DPS run creates.
pub const ENROLLMENT_GROUP: &str = "fleetsim-fleet";

/// The host name of embedded hub number `n` (from 2): the first hub's with `-n` after its first
/// label (`fleetsim-hub.azure-devices.net` → `fleetsim-hub-2.azure-devices.net`).
pub fn hub_host(first: &str, n: u32) -> String {
    match first.split_once('.') {
        Some((label, rest)) => format!("{label}-{n}.{rest}"),
        None => format!("{first}-{n}"),
    }
}

/// The embedded DPS's settings from the scenario.
fn dps_config(dps: &EmbeddedDps) -> DpsConfig {
    let mut limits = match dps.limits {
        DpsLimitsChoice::Published => DpsLimits::published(),
        DpsLimitsChoice::Unlimited => DpsLimits::unlimited(),
    };
    if let Some(rate) = dps.registration_rate {
        limits.registrations_per_minute = Some(rate.0 * 60.0);
    }
    DpsConfig {
        retry_after_secs: dps.retry_after.0.as_secs_f64().ceil().max(1.0) as u64,
        assignment_delay: dps.assignment_delay.0,
        limits,
        ..DpsConfig::default()
    }
}

/// Starts DPS on `ip` with `hubs - 1` hubs like the first (`hub`, trusting `extra_cas` too), and
/// its enrolment group.
pub async fn start_embedded(
    emulators: &mut Emulators,
    dps: &EmbeddedDps,
    hub: &HubConfig,
    extra_cas: &[CertificateDer<'static>],
    ip: std::net::IpAddr,
) -> Result<(), FleetError> {
    for n in 2..=dps.hubs {
        let config = HubConfig {
            host_name: hub_host(&hub.host_name, n),
            ..hub.clone()
        };
        let added = emulators.add_hub(&config, SocketAddr::new(ip, 0)).await?;
        for ca in extra_cas {
            added.hub.trust_ca(ca.clone());
        }
    }
    let running = emulators
        .start_dps(DpsAddresses::ephemeral(ip), &dps_config(dps))
        .await?;
    let first_hub = hub.host_name.clone();
    running
        .emulator
        .put_enrollment_group(enrollment_group(dps.allocation, first_hub))
        .map_err(|e| FleetError::Setup(format!("DPS enrolment group: {}", e.message)))?;
    Ok(())
}

/// The group that admits every certificate chaining to the embedded CA's root.
fn enrollment_group(allocation: DpsAllocation, first_hub: String) -> EnrollmentGroup {
    let (policy, iot_hubs) = match allocation {
        // Over every linked hub.
        DpsAllocation::Hashed => (AllocationPolicy::Hashed, Vec::new()),
        DpsAllocation::Static => (AllocationPolicy::Static, vec![first_hub]),
    };
    let mut group = EnrollmentGroup::for_uploaded_ca(ENROLLMENT_GROUP, EZCA_ROOT_CERTIFICATE);
    group.settings.allocation_policy = Some(policy);
    group.settings.iot_hubs = iot_hubs;
    group
}

/// Lets devices dial every embedded hub by the name DPS gives them: the first hub at its
/// listeners (`first`), the others at theirs.
pub fn route_hubs(transport: &mut MqttTransport, emulators: &Emulators, first: Vec<SocketAddr>) {
    let dial = |a: &SocketAddr| (a.ip().to_string(), a.port());
    transport.route(emulators.hub.host_name(), first.iter().map(dial));
    for extra in &emulators.extra_hubs {
        transport.route(extra.hub.host_name(), [dial(&extra.mqtt_addr)]);
    }
}

/// The hub's host name in a remote DPS run: `iothub.host`, else the connection string's
/// HostName if one is set (DPS runs need none), else none (empty).
pub fn remote_hub_name(hub: &RemoteHub) -> String {
    if let Some(host) = &hub.host {
        return host.clone();
    }
    std::env::var(&hub.connection_string_env)
        .ok()
        .and_then(|cs| ConnectionString::parse(&cs).ok())
        .map(|cs| cs.host_name)
        .unwrap_or_default()
}

/// A hub reached at another address than its name (`fleetsim emulate`, a private endpoint):
/// devices DPS assigns to `host_name` dial `iothub.address`.
pub fn route_remote_hub(
    transport: &mut MqttTransport,
    hub: &RemoteHub,
    host_name: &str,
    websocket: bool,
) {
    let Some(address) = &hub.address else {
        return;
    };
    if host_name.is_empty() {
        return;
    }
    let port = match websocket {
        true => hub.websocket_port,
        false => hub.mqtt_port,
    };
    transport.route(host_name, [(address.clone(), port)]);
}

/// How long one registration may take, connect to assignment: the Python SDK's 30 s.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);

fn endpoint(host: String, port: u16, id_scope: String, websocket: bool) -> DpsEndpoint {
    DpsEndpoint {
        host,
        port,
        id_scope,
        websocket,
        keep_alive: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(30),
        timeout: REGISTRATION_TIMEOUT,
        // DPS's waits are real time, compressed scenario or not (see `device::provision`).
        polling: Polling::default(),
    }
}

/// The client for the embedded DPS (its MQTT/TLS or WebSocket endpoint).
pub fn embedded_client(
    emulators: &Emulators,
    websocket: bool,
) -> Result<DpsProvisioning, FleetError> {
    let running = emulators
        .dps
        .as_ref()
        .ok_or_else(|| FleetError::Setup("the embedded DPS is not running".into()))?;
    let addr = match websocket {
        true => running.websocket_addr,
        false => running.mqtt_addr,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(emulators.tls_root.clone())
        .map_err(|e| FleetError::Setup(e.to_string()))?;
    let scope = running.emulator.id_scope().to_string();
    let endpoint = endpoint(addr.ip().to_string(), addr.port(), scope, websocket);
    Ok(DpsProvisioning(DpsClient::new(endpoint, roots)))
}

/// The client for a real DPS (or `fleetsim emulate`'s), trusting the system's roots and
/// `extra_roots`.
pub fn remote_client(
    dps: &RemoteDps,
    extra_roots: Vec<CertificateDer<'static>>,
    websocket: bool,
) -> Result<DpsProvisioning, FleetError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots.add_parsable_certificates(extra_roots);
    if roots.is_empty() {
        return Err(FleetError::Setup(
            "no trusted roots for DPS's TLS: install CA certificates or set dps.trust_pem".into(),
        ));
    }
    let port = match websocket {
        true => dps.websocket_port,
        false => dps.mqtt_port,
    };
    let endpoint = endpoint(
        dps.global_endpoint.clone(),
        port,
        dps.id_scope.trim().to_string(),
        websocket,
    );
    Ok(DpsProvisioning(DpsClient::new(endpoint, roots)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn further_hubs_are_named_after_the_first() {
        assert_eq!(
            hub_host("fleetsim-hub.azure-devices.net", 2),
            "fleetsim-hub-2.azure-devices.net"
        );
        assert_eq!(hub_host("hub", 3), "hub-3");
    }
}
